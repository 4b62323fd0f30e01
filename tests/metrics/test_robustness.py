"""Max-sensitivity, continuity, local Lipschitz: closed forms and a per-sample reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import metrics


def _grad(f, x, t):
    return jax.grad(lambda x: f(x)[jnp.arange(len(x)), t].sum())(x)


def _gxi(f, x, t):
    return _grad(f, x, t) * x


W = jnp.array([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.0], [2.0, 1.0]])
linear = lambda x: x @ W  # noqa: E731


def _mlp(x):
    h = jnp.tanh(x @ W)
    return h @ jnp.array([[1.0, 0.0, 2.0], [-1.0, 1.0, 0.5]])


def test_gradient_of_a_linear_model_does_not_move():
    x = jax.random.normal(jax.random.key(0), (3, 4))
    key = jax.random.key(1)
    for fn in (metrics.max_sensitivity, metrics.continuity, metrics.local_lipschitz):
        np.testing.assert_array_equal(fn(linear, x, 1, _grad, key=key), 0.0)


@pytest.mark.parametrize("samples,batch_size", [(6, None), (6, 4)])
def test_match_a_per_sample_reference(samples, batch_size):
    x = jax.random.normal(jax.random.key(2), (3, 4))
    t = jnp.array([0, 1, 2])
    key = jax.random.key(3)
    a0 = np.asarray(_gxi(_mlp, x, t), np.float64)
    # example i's noise: (samples, 4) drawn from its own key fold_in(key, i)
    keys = [jax.random.fold_in(key, i) for i in range(len(x))]
    uni = jnp.stack([jax.random.uniform(k, (samples, 4), minval=-0.05, maxval=0.05)
                     for k in keys], 1)
    gau = jnp.stack([0.2 * jax.random.normal(k, (samples, 4)) for k in keys], 1)
    sens, cont, lip = [], [], []
    for s in range(samples):
        du = np.asarray(_gxi(_mlp, x + uni[s], t), np.float64) - a0
        dg = np.asarray(_gxi(_mlp, x + gau[s], t), np.float64) - a0
        eps = np.asarray(gau[s], np.float64)
        sens.append(np.linalg.norm(du, axis=1) / np.linalg.norm(a0, axis=1))
        cont.append(np.abs(dg).sum(1) / np.linalg.norm(eps, axis=1))
        lip.append(np.linalg.norm(dg, axis=1) / np.linalg.norm(eps, axis=1))
    kw = dict(key=key, samples=samples, batch_size=batch_size)
    np.testing.assert_allclose(metrics.max_sensitivity(_mlp, x, t, _gxi, radius=0.05, **kw),
                               np.max(sens, 0), rtol=2e-3)
    np.testing.assert_allclose(metrics.continuity(_mlp, x, t, _gxi, stdev=0.2, **kw),
                               np.max(cont, 0), rtol=2e-3)
    np.testing.assert_allclose(metrics.local_lipschitz(_mlp, x, t, _gxi, stdev=0.2, **kw),
                               np.max(lip, 0), rtol=2e-3)


_ROBUSTNESS = (metrics.max_sensitivity, metrics.continuity, metrics.local_lipschitz)


@pytest.mark.parametrize("fn", _ROBUSTNESS)
def test_an_example_scores_the_same_whatever_else_is_in_the_batch(fn):
    x = jax.random.normal(jax.random.key(9), (4, 4))
    t = jnp.array([0, 1, 2, 0])
    kw = dict(key=jax.random.key(10), samples=3)
    full = np.asarray(fn(_mlp, x, t, _gxi, **kw))
    np.testing.assert_allclose(fn(_mlp, x[:1], t[:1], _gxi, **kw), full[:1], rtol=1e-5)
    np.testing.assert_allclose(fn(_mlp, x[:3], t[:3], _gxi, **kw), full[:3], rtol=1e-5)
    others = x.at[1:].set(jax.random.normal(jax.random.key(11), (3, 4)))
    np.testing.assert_allclose(fn(_mlp, others, t, _gxi, **kw)[0], full[0], rtol=1e-5)
    np.testing.assert_allclose(fn(_mlp, x, t, _gxi, batch_size=2, **kw), full, rtol=1e-4)


@pytest.mark.parametrize("fn", _ROBUSTNESS)
def test_a_map_holding_nan_scores_nan_not_zero(fn):
    def nan_gradient(f, x, t):  # e.g. a 0/0 inside a method
        return _grad(f, x, t).at[:, 0].set(jnp.nan)

    x = jax.random.normal(jax.random.key(12), (3, 4))
    got = np.asarray(fn(_mlp, x, 0, nan_gradient, key=jax.random.key(13), samples=2))
    assert np.isnan(got).all()
    still = fn(linear, x, 0, _grad, key=jax.random.key(13), samples=2)  # 0/0 stays 0
    np.testing.assert_array_equal(still, 0.0)


def test_lipschitz_of_gradient_x_input_on_a_linear_model_is_bounded_by_the_weights():
    # Φ(x') − Φ(x) = w_t ⊙ ε, so the ratio lies in [min |w_t|, max |w_t|].
    x = jax.random.normal(jax.random.key(4), (5, 4))
    lip = np.asarray(metrics.local_lipschitz(linear, x, 0, _gxi, key=jax.random.key(5),
                                             samples=20))
    w = np.abs(np.asarray(W[:, 0]))
    assert np.all(lip <= w.max() + 1e-5) and np.all(lip >= w.min() - 1e-5)
    assert lip.max() > 0.8 * w.max() * 0.5


def test_the_explicit_key_fixes_the_noise():
    x = jax.random.normal(jax.random.key(6), (3, 4))
    for fn in (metrics.max_sensitivity, metrics.continuity, metrics.local_lipschitz):
        a = fn(_mlp, x, 0, _gxi, key=jax.random.key(7), samples=4)
        np.testing.assert_array_equal(fn(_mlp, x, 0, _gxi, key=jax.random.key(7), samples=4), a)
        assert not np.allclose(fn(_mlp, x, 0, _gxi, key=jax.random.key(8), samples=4), a)
        jitted = jax.jit(lambda x, k: fn(_mlp, x, 0, _gxi, key=k, samples=4))
        np.testing.assert_allclose(jitted(x, jax.random.key(7)), a, rtol=1e-5)


def test_errors():
    x = jnp.ones((2, 4))
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        metrics.continuity(linear, x, 0, _grad, key=0)
    with pytest.raises(ValueError, match="radius must be a positive number"):
        metrics.max_sensitivity(linear, x, 0, _grad, key=jax.random.key(0), radius=0.0)
    with pytest.raises(TypeError, match="method must be callable"):
        metrics.local_lipschitz(linear, x, 0, "gradient", key=jax.random.key(0))
    with pytest.raises(ValueError, match="samples must be an int >= 1"):
        metrics.continuity(linear, x, 0, _grad, key=jax.random.key(0), samples=0)
