"""compare(): the table equals the metrics called one by one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from jaxplain import metrics


def _f(x):
    w = jnp.arange(1.0, 33.0).reshape(16, 2) / 16 - 1.0
    return jnp.tanh(x.reshape(len(x), -1) @ w) @ jnp.array([[1.0, -1.0], [0.5, 2.0]])


def _grad(f, x, t):
    return jax.grad(lambda x: f(x)[jnp.arange(len(x)), t].sum())(x)


def _gxi(f, x, t):
    return _grad(f, x, t) * x


def test_table_rows_equal_direct_calls():
    x = jax.random.uniform(jax.random.key(0), (4, 4, 4, 1))
    t = jnp.array([0, 1, 1, 0])
    key = jax.random.key(1)
    methods = {"gradient": _grad, "gradient_x_input": _gxi}
    names = tuple(metrics.METRICS)
    table = metrics.compare(_f, x, t, methods, names, key=key, steps=8, samples=3)
    assert table.header == ("method",) + names
    assert [r[0] for r in table.rows] == ["gradient", "gradient_x_input"]
    d = table.as_dict()
    a = _gxi(_f, x, t)
    expected = {
        "deletion_morf": metrics.deletion(_f, x, t, a, steps=8).area.mean(),
        "deletion_lerf": metrics.deletion(_f, x, t, a, steps=8, order="lerf").area.mean(),
        "insertion": metrics.insertion(_f, x, t, a, steps=8).area.mean(),
        "lerf_change": metrics.pixel_perturbation(_f, x, a, target=t).mean(),
        "sparseness": metrics.sparseness(a).mean(),
        "complexity": metrics.complexity(a).mean(),
        "continuity": metrics.continuity(_f, x, t, _gxi, key=key, samples=3).mean(),
        "max_sensitivity": metrics.max_sensitivity(_f, x, t, _gxi, key=key, samples=3).mean(),
    }
    for name, value in expected.items():
        assert d["gradient_x_input"][name] == pytest.approx(float(value), rel=1e-5, abs=1e-7)
    assert table.better[names.index("deletion_morf")] == "lower"


def test_insertion_starts_from_zeros_for_vectors_and_as_asked():
    x = jax.random.uniform(jax.random.key(0), (4, 16))
    t = jnp.array([0, 1, 1, 0])
    a = _gxi(_f, x, t)
    table = metrics.compare(_f, x, t, {"gxi": _gxi}, ("insertion",), key=jax.random.key(1),
                            steps=8)
    zeros = metrics.insertion(_f, x, t, a, steps=8, baseline="zeros").area.mean()
    assert table.rows[0][1] == pytest.approx(float(zeros), rel=1e-5)
    table = metrics.compare(_f, x, t, {"gxi": _gxi}, ("insertion",), key=jax.random.key(1),
                            steps=8, insertion_baseline=0.5)
    half = metrics.insertion(_f, x, t, a, steps=8, baseline=0.5).area.mean()
    assert table.rows[0][1] == pytest.approx(float(half), rel=1e-5)
    assert abs(float(half) - float(zeros)) > 1e-3


def test_errors():
    x = jnp.ones((2, 4, 4, 1))
    with pytest.raises(ValueError, match="metrics must be names from"):
        metrics.compare(_f, x, 0, {"g": _grad}, ("auc",), key=jax.random.key(0))
    with pytest.raises(TypeError, match="methods must be a non-empty mapping"):
        metrics.compare(_f, x, 0, {}, key=jax.random.key(0))
    with pytest.raises(ValueError, match="the attribution of 'bad' must have the shape"):
        metrics.compare(_f, x, 0, {"bad": lambda f, x, t: x[..., 0]}, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"the attribution of 'inf' contains NaN or inf"):
        metrics.compare(_f, x, 0, {"inf": lambda f, x, t: x.at[:, 0].set(jnp.inf)},
                        key=jax.random.key(0))


@pytest.mark.parametrize("head", [jax.nn.softmax,                          # seen in the program
                                  lambda z: jnp.clip(jax.nn.softmax(z), 1e-7, 1.0)])  # by value
def test_a_softmax_head_gives_the_table_of_its_logits(head):
    # The perturbation metrics read a softmax model's probabilities as they are, so the table
    # equals that of the logits model (whose probabilities they compute): no second softmax.
    def probs(x):
        return head(_f(x) * 3.0)

    def logits(x):
        return _f(x) * 3.0

    x = jax.random.uniform(jax.random.key(0), (4, 4, 4, 1))
    t = jnp.array([0, 1, 1, 0])
    fixed = jax.random.normal(jax.random.key(2), x.shape)
    methods = {"fixed": lambda f, x, t: fixed}
    names = ("deletion_morf", "deletion_lerf", "insertion", "lerf_change")
    got = metrics.compare(probs, x, t, methods, names, key=jax.random.key(1), steps=8).as_dict()
    want = metrics.compare(logits, x, t, methods, names, key=jax.random.key(1), steps=8).as_dict()
    for name in names:
        assert got["fixed"][name] == pytest.approx(want["fixed"][name], rel=1e-4, abs=1e-6), name


def test_the_random_control_draws_each_example_from_its_own_values():
    noise = metrics.random_attribution(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (5, 3, 4, 2))
    batch = noise(None, x, 0)
    for i in range(5):  # the same map alone or beside others
        assert (noise(None, x[i:i + 1], 0)[0] == batch[i]).all()
    reordered = x.reshape(5, -1)[:, ::-1].reshape(x.shape)  # same sum, values moved
    for other in (x[1:2], x[:1] + 1e-3, reordered[:1], jnp.tile(x[:1], (2, 1, 1, 1))[1:]):
        same = bool(jnp.array_equal(noise(None, other, 0)[0], batch[0]))
        assert same == bool(jnp.array_equal(other[0], x[0])), other[0]
    assert float(jnp.corrcoef(batch[0].ravel(), batch[1].ravel())[0, 1]) < 0.5
    assert 0.4 < float(batch.mean()) < 0.6 and float(batch.min()) >= 0 and float(batch.max()) < 1
