"""Findings of a tabular trial: category ids cast to int inside the model (zero gradient), glob
sites, integer codes for the perturbation methods, Shapley sampling's evaluations, background
baselines and KernelSHAP's sample budget."""

import itertools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A
from jaxplain.attribution import _model_checks

TABLE = jnp.array([0.0, 2.0, -1.0, 5.0])


def cast_model(x):
    """x[:, 0] a category id stored as a float (an embedding lookup), x[:, 1] a number."""
    return (jnp.take(TABLE, x[:, 0].astype(jnp.int32)) + x[:, 1])[:, None]


X_CAST = jnp.array([[3.0, 1.0], [1.0, 2.0]])
W = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
X4 = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4)), jnp.float32)
KEY = jax.random.key(0)


def _messages(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught]


def _steps_warnings(call):
    return [m for m in _messages(call) if "piecewise-constant steps" in m]


GRADIENT_METHODS = {
    "gradient": lambda f, x: A.gradient(f, x, 0),
    "gradient_x_input": lambda f, x: A.gradient_x_input(f, x, 0),
    "integrated_gradients": lambda f, x: A.integrated_gradients(f, x, 0, steps=4),
    "smoothgrad": lambda f, x: A.smoothgrad(f, x, 0, key=KEY, samples=2),
    "gradient_shap": lambda f, x: A.gradient_shap(f, x, 0, key=KEY, baselines=jnp.zeros((1, 2)),
                                                  samples=2),
    "deeplift": lambda f, x: A.deeplift(f, x, 0),
    "deeplift_shap": lambda f, x: A.deeplift_shap(f, x, 0, baselines=jnp.zeros((2, 2))),
}


@pytest.mark.parametrize("name", list(GRADIENT_METHODS))
def test_gradient_methods_warn_once_at_a_cast_to_int(name):
    """IG gave [[0, 1], [0, 2]] (completeness delta [-5, -2]) without a word; deeplift blamed
    jnp.take's 'select_n'. Now each call warns once, naming the cast."""
    for _ in range(2):  # every call, not only the first (the analysis is cached)
        found = _steps_warnings(lambda: GRADIENT_METHODS[name](cast_model, X_CAST))
        assert len(found) == 1, found
        assert found[0].startswith(f"{name}: ") and "'convert_element_type(int32)'" in found[0]
        assert "layer_integrated_gradients" in found[0] and "kernel_shap" in found[0]
    assert not [m for m in _messages(lambda: GRADIENT_METHODS[name](cast_model, X_CAST))
                if "'select_n'" in m]


@pytest.mark.parametrize("step, op", [(jnp.floor, "floor"), (jnp.ceil, "ceil"),
                                      (jnp.round, "round"), (jnp.sign, "sign"),
                                      (lambda h: h.astype(bool).astype(h.dtype),
                                       "convert_element_type(bool)")])
def test_steps_are_named(step, op):
    f = lambda z: step(z @ W)  # noqa: E731
    assert _model_checks.steps(f, X4) == (op,)


def test_a_comparison_that_picks_an_index_is_a_step():
    """Binning a float (value > edges, counted) and looking the bin up in a table."""
    edges = jnp.array([-1.0, 0.0, 1.0])
    def f(z):
        return (jnp.take(jnp.arange(4.0), (z[:, :1] > edges).sum(1)) + z[:, 1])[:, None]

    assert _model_checks.steps(f, X4) == ("gt",)


def _dropout(z):
    keep = jax.random.bernoulli(jax.random.key(3), 0.5, (z.shape[0], 3))
    return jnp.where(keep, z @ W / 0.5, 0.0)


@pytest.mark.parametrize("f", [
    lambda z: jax.nn.relu(z @ W),
    lambda z: (z @ W) * ((z @ W) > 0),                                  # relu by hand
    lambda z: jnp.where(z @ W > 0, z @ W, 0.1 * (z @ W)),
    lambda z: jnp.clip(z @ W, 0.0, 6.0),
    lambda z: jax.nn.logsumexp(z @ W, axis=1, keepdims=True),
    lambda z: jax.nn.one_hot(jnp.argmax(z, 1), 3) * (z @ W),            # argmax
    lambda z: jax.lax.top_k(z, 3)[0],
    lambda z: jnp.take(z, jnp.array([0, 2, 3]), axis=1),                # constant indices
    lambda z: (z.astype(jnp.bfloat16) @ W.astype(jnp.bfloat16)).astype(jnp.float32),
    lambda z: z @ W + jax.lax.stop_gradient(jnp.round(z @ W) - z @ W),  # straight-through
    _dropout,                                                           # a mask from an rng
    lambda z: jnp.nan_to_num(z @ W),
], ids=["relu", "hand_relu", "where", "clip", "logsumexp", "argmax", "top_k", "take",
        "bfloat16", "straight_through", "dropout", "nan_to_num"])
def test_no_step_at_common_legitimate_ops(f):
    assert _model_checks.steps(f, X4) == ()
    assert not _steps_warnings(lambda: A.integrated_gradients(f, X4, 0, steps=2))


def test_smoothgrad_over_a_perturbation_method_does_not_warn():
    f = lambda z: cast_model(z) * 1.0  # noqa: E731 - a model of its own (the warning is per f)
    assert not _steps_warnings(lambda: A.smoothgrad(f, X_CAST, 0, key=KEY, samples=2,
                                                    method=A.feature_ablation))


def test_the_steps_are_found_once_per_program(monkeypatch):
    calls = []
    found = _model_checks._find_steps
    monkeypatch.setattr(_model_checks, "_find_steps", lambda p: calls.append(p) or found(p))
    f = lambda z: jnp.floor(z @ W)  # noqa: E731
    for _ in range(3):
        _steps_warnings(lambda: A.integrated_gradients(f, X4, 0, steps=2))
    assert len(calls) == 1


def _two_embeddings(ids):
    with jax.named_scope("emb0"):
        a = jnp.take(jnp.arange(10.0).reshape(5, 2), ids[:, 0], axis=0)
    with jax.named_scope("emb1"):
        b = jnp.take(jnp.arange(10.0, 20.0).reshape(5, 2), ids[:, 1], axis=0) * 0.5
    return jnp.concatenate([a, b], -1) @ jnp.array([[1.0], [-1.0], [2.0], [0.5]])


IDS = jnp.array([[1, 2], [4, 0]], jnp.int32)


@pytest.mark.parametrize("method", [A.layer_integrated_gradients, A.activation_x_gradient])
def test_a_glob_site_of_one_match_is_that_site(method):
    """A glob gave a bare KeyError: 'emb0*'; now it is its one match, several a ValueError."""
    by_name = method(_two_embeddings, IDS, 0, site="emb0")
    np.testing.assert_array_equal(method(_two_embeddings, IDS, 0, site="emb0*"), by_name)
    with pytest.raises(ValueError, match=r"'emb\*' matches 2 sites \(emb0, emb1\)"):
        method(_two_embeddings, IDS, 0, site="emb*")


def test_layer_conductance_takes_a_glob_of_one_match():
    f = lambda z: jax.nn.relu(z @ W).sum(1, keepdims=True)  # noqa: E731
    np.testing.assert_array_equal(A.layer_conductance(f, X4, 0, site="re*", steps=4),
                                  A.layer_conductance(f, X4, 0, site="relu", steps=4))



def test_grad_cam_reads_a_glob_of_one_match_as_its_site_with_one_compiled_program():
    def f(z):  # (n, 4, 1) signals
        h = jax.nn.relu(jax.lax.conv_general_dilated(z, jnp.ones((2, 1, 3)), (1,), "SAME",
                                                     dimension_numbers=("NWC", "WIO", "NWC")))
        return h.mean(1) @ jnp.array([[1.0, -1.0, 0.5], [0.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    z = jnp.arange(8.0).reshape(2, 4, 1) - 3.0
    by_name = A.grad_cam(f, z, 0, site="relu")
    compiled = A._cam._grad_cam._cache_size()
    np.testing.assert_array_equal(A.grad_cam(f, z, 0, site="rel*"), by_name)
    assert A._cam._grad_cam._cache_size() == compiled

CODES = jnp.array([[3, 2, 1], [1, 0, 2], [2, 3, 0]], jnp.int32)
CATS = jnp.array([[0.0, 2.0, -1.0, 5.0], [1.0, 0.0, 3.0, -2.0], [0.5, -0.5, 1.5, 0.0]])


def coded(ids):
    """Three categorical columns (integer codes) with an interaction of the first two."""
    a, b, c = (CATS[j, ids[:, j]] for j in range(3))
    return (a + b + a * b + c)[:, None]


def _exact_shapley(f, x, b):
    d, n = x.shape[1], x.shape[0]
    phi = np.zeros((n, d))
    for i in range(d):
        others = [j for j in range(d) if j != i]
        for k in range(d):
            for s in itertools.combinations(others, k):
                on = np.isin(np.arange(d), s)
                w = math.factorial(k) * math.factorial(d - k - 1) / math.factorial(d)
                without = np.where(on, x, b)
                with_i = np.where(on | (np.arange(d) == i), x, b)
                phi[:, i] += w * np.asarray(f(jnp.asarray(with_i)) - f(jnp.asarray(without)))[:, 0]
    return phi


def test_perturbation_methods_take_integer_codes():
    """kernel_shap, feature_ablation, shapley_sampling refused int x with pixel advice."""
    exact = _exact_shapley(coded, np.asarray(CODES), np.zeros_like(CODES))
    for phi in (A.kernel_shap(coded, CODES, 0, baseline=0),
                A.shapley_sampling(coded, CODES, 0, key=KEY, samples=200)):
        assert phi.dtype == jnp.float32
    np.testing.assert_allclose(A.kernel_shap(coded, CODES, 0, baseline=0), exact, atol=1e-5)
    sampled = A.shapley_sampling(coded, CODES, 0, key=KEY, samples=200)
    np.testing.assert_allclose(sampled.sum(1), exact.sum(1), atol=1e-5)  # efficiency
    np.testing.assert_allclose(sampled[:, 2], exact[:, 2], atol=1e-5)    # additive column
    drops = np.stack([np.asarray(coded(CODES) - coded(CODES.at[:, j].set(0)))[:, 0]
                      for j in range(3)], 1)
    np.testing.assert_allclose(A.feature_ablation(coded, CODES, 0), drops, atol=1e-6)
    np.testing.assert_allclose(A.occlusion(coded, CODES, 0, window=1), drops, atol=1e-6)
    coef = A.lime(coded, CODES, 0, key=KEY, samples=64)
    assert coef.dtype == jnp.float32 and np.isfinite(coef).all()


def test_integer_codes_take_integer_baselines():
    reference = A.feature_ablation(coded, CODES, 0, baseline=jnp.array([1, 1, 1]))
    np.testing.assert_array_equal(A.feature_ablation(coded, CODES, 0, baseline=1.0), reference)
    with pytest.raises(TypeError, match="baseline must hold integer codes"):
        A.feature_ablation(coded, CODES, 0, baseline=0.5)
    with pytest.raises(TypeError, match="floating-point"):  # raw pixels are still refused
        A.feature_ablation(coded, CODES.astype(jnp.uint8), 0)


def test_shapley_sampling_evaluates_the_ends_once():
    """4,000 rows were evaluated where 2,020 suffice (10 rows, 3 groups, 100 orderings)."""
    rows = []

    def f(z):
        jax.debug.callback(lambda n: rows.append(int(n)), z.shape[0])
        return z.sum(1, keepdims=True)

    x, mask = np.ones((10, 6), np.float32), np.array([0, 1, 2, 2, 2, 2])
    A.shapley_sampling(f, x, 0, key=KEY, samples=100, feature_mask=mask,
                       batch_size=1000).block_until_ready()
    assert sum(rows) == 10 * 100 * (3 - 1) + 2 * 10


def test_shapley_sampling_gives_the_numbers_of_every_ordering_evaluated_in_full():
    """The same key gives the same orderings, and the same estimate as evaluating f(b) and f(x)
    in every ordering (the former formula)."""
    f = lambda z: jnp.tanh(z @ W)  # noqa: E731
    samples, groups = 7, 4
    ours = np.asarray(A.shapley_sampling(f, X4, 1, key=KEY, samples=samples))
    orders = jax.vmap(lambda k: jax.random.permutation(k, groups))(jax.random.split(KEY, samples))
    x, expected = np.asarray(X4), np.zeros(X4.shape)
    for order in np.asarray(orders):
        values = [np.asarray(f(jnp.where(np.isin(np.arange(groups), order[:k]), x, 0)))[:, 1]
                  for k in range(groups + 1)]
        for k, g in enumerate(order):
            expected[:, g] += (values[k + 1] - values[k]) / samples
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)


def test_a_background_baseline_is_refused_with_the_recipe():
    f = lambda z: jnp.tanh(z @ W)  # noqa: E731
    background = jnp.asarray(np.random.default_rng(2).normal(size=(5, 4)), jnp.float32)
    with pytest.raises(ValueError, match=r"jax.vmap\(lambda b: kernel_shap\(f, x, target, "
                                         r"baseline=b\)\)\(background\).mean\(0\)"):
        A.kernel_shap(f, X4, 0, baseline=background)
    phi = jax.vmap(lambda b: A.kernel_shap(f, X4, 0, baseline=b))(background).mean(0)
    np.testing.assert_allclose(phi.sum(1), f(X4)[:, 0] - f(background)[:, 0].mean(), atol=1e-5)


def test_kernel_shap_enumerates_when_the_budget_covers_every_coalition():
    """25,600 samples on 5 features were 0.010-0.025 off; 30 = 2^5 - 2 already cover all."""
    def f(z):
        return jnp.tanh(z[:, :2].sum(1, keepdims=True)) * z[:, 2:3] + z[:, 3:4] * z[:, 4:5]

    x = jnp.asarray(np.random.default_rng(3).normal(size=(3, 5)), jnp.float32)
    exact = A.kernel_shap(f, x, 0)
    np.testing.assert_allclose(A.kernel_shap(f, x, 0, key=KEY, samples=30), exact, atol=1e-6)
    assert np.abs(np.asarray(A.kernel_shap(f, x, 0, key=KEY, samples=29) - exact)).max() > 1e-4


def test_kernel_shap_refuses_fewer_samples_than_groups():
    """samples=3 on 6 features fitted an underdetermined surrogate (a dummy got 1.3)."""
    with pytest.raises(ValueError, match=r"samples >= 6"):
        A.kernel_shap(lambda z: z @ jnp.ones((6, 1)), jnp.ones((2, 6)), 0, key=KEY, samples=3)
