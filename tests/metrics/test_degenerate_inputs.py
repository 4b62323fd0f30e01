"""Degenerate inputs: a model whose outputs are NaN for some examples scores NaN for exactly
those (the others as with a finite model), an all-zero map is as complex and as sparse as a
uniform one, and an empty batch is a clear error."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from jaxplain import metrics
from tests.metrics._models import grad

_RNG = np.random.default_rng(0)
_W1 = jnp.asarray(_RNG.normal(size=(6, 8)), jnp.float32)
_W2 = jnp.asarray(_RNG.normal(size=(8, 3)), jnp.float32)
# x[:, 0] = ±3: the examples with -3 have NaN logits; every perturbation the metrics make (the
# zeros baseline, noise of scale 0.1) keeps a finite example's x[:, 0] >= 0, so its copies stay
# finite, while a NaN example's own output, which every score reads, stays NaN
X = jnp.asarray(_RNG.normal(size=(4, 6)), jnp.float32).at[:, 0].set(
    jnp.array([3.0, -3.0, 3.0, -3.0]))
T = jnp.array([0, 1, 2, 0])
BAD = np.array([False, True, False, True])
K = jax.random.key(0)


def finite_model(x):
    return jax.nn.relu(x @ _W1) @ _W2


def partly_nan_model(x):
    return jnp.where(x[:, :1] < 0, jnp.nan, finite_model(x))


def nan_where_logit_is(f, x, t):
    """The gradient, NaN for an example whose target logit is not finite (what the attribution
    methods return for such an example)."""
    logit = f(x)[jnp.arange(x.shape[0]), t]
    return grad(f, x, t) * (1.0 + 0.0 * logit)[:, None]


A = grad(finite_model, X, T) * X  # a finite map, gradient x input of the finite model

MAP_METRICS = {
    "deletion": lambda f: metrics.deletion(f, X, T, A, steps=6).area,
    "insertion": lambda f: metrics.insertion(f, X, T, A, steps=6).area,
    "pixel_perturbation": lambda f: metrics.pixel_perturbation(f, X, A, target=T),
    "completeness": lambda f: metrics.completeness(f, X, T, A),
    "faithfulness_correlation": lambda f: metrics.faithfulness_correlation(
        f, X, T, A, key=K, subset_size=2, samples=20),
    "monotonicity": lambda f: metrics.monotonicity(f, X, T, A, output="logit"),
    "monotonicity_correlation": lambda f: metrics.monotonicity_correlation(
        f, X, T, A, key=K, samples=2, steps=3),
    "infidelity": lambda f: metrics.infidelity(f, X, T, A, key=K, samples=8),
    "irof": lambda f: metrics.irof(f, X, T, A, np.array([0, 0, 1, 1, 2, 2]), baseline=0.0),
}
METHOD_METRICS = {
    "continuity": lambda f: metrics.continuity(f, X, T, nan_where_logit_is, key=K, samples=4),
    "max_sensitivity": lambda f: metrics.max_sensitivity(f, X, T, nan_where_logit_is, key=K,
                                                         samples=4),
    "local_lipschitz": lambda f: metrics.local_lipschitz(f, X, T, nan_where_logit_is, key=K,
                                                         samples=4),
    "random_logit": lambda f: metrics.random_logit(f, X, T, nan_where_logit_is, key=K,
                                                   similarity="spearman"),
}


@pytest.mark.parametrize("name", sorted(MAP_METRICS) + sorted(METHOD_METRICS))
def test_nan_outputs_score_nan_for_those_examples_only(name):
    call = {**MAP_METRICS, **METHOD_METRICS}[name]
    want = np.asarray(call(finite_model))
    got = np.asarray(call(partly_nan_model))
    assert np.isfinite(want).all()
    rows = got.reshape(len(got), -1)
    assert np.isnan(rows[BAD]).all(), got
    np.testing.assert_allclose(got[~BAD], want[~BAD], rtol=1e-6)


def test_spearman_of_a_map_holding_nan_or_inf_is_nan():
    a = jnp.asarray(_RNG.normal(size=(3, 10)), jnp.float32)
    b = jnp.asarray(_RNG.normal(size=(3, 10)), jnp.float32)
    got = np.asarray(metrics.spearman(a.at[0, 3].set(jnp.nan), b.at[2, 0].set(jnp.inf)))
    assert np.isnan(got[[0, 2]]).all(), got
    np.testing.assert_allclose(got[1], scipy.stats.spearmanr(a[1], b[1])[0], rtol=1e-5)


def test_a_zero_map_scores_as_a_uniform_map():
    n = 64
    maps = jnp.zeros((3, 8, 8, 1)).at[1].set(0.25).at[2, 3, 3, 0].set(1.0)  # zero, uniform, one
    complexity = np.asarray(metrics.complexity(maps))
    sparseness = np.asarray(metrics.sparseness(maps))
    np.testing.assert_allclose(complexity[:2], [np.log(n)] * 2, rtol=1e-6)
    np.testing.assert_allclose(sparseness[:2], [0.0, 0.0], atol=1e-7)
    # the one-hot map is the other end of both scales
    np.testing.assert_allclose([complexity[2], sparseness[2]], [0.0, (n - 1) / n], atol=1e-6)


def _empty(name):
    x = jnp.zeros((0, 6))
    t = jnp.zeros((0,), jnp.int32)
    return {
        "deletion": lambda: metrics.deletion(finite_model, x, t, x, steps=4),
        "pixel_perturbation": lambda: metrics.pixel_perturbation(finite_model, x, x),
        "completeness": lambda: metrics.completeness(finite_model, x, t, x),
        "faithfulness_correlation": lambda: metrics.faithfulness_correlation(
            finite_model, x, t, x, key=K, subset_size=2, samples=4),
        "monotonicity": lambda: metrics.monotonicity(finite_model, x, t, x),
        "infidelity": lambda: metrics.infidelity(finite_model, x, t, x, key=K, samples=4),
        "max_sensitivity": lambda: metrics.max_sensitivity(finite_model, x, t, grad, key=K),
        "random_logit": lambda: metrics.random_logit(finite_model, x, t, grad, key=K,
                                                     similarity="spearman"),
        "compare": lambda: metrics.compare(finite_model, x, t, {"g": grad}, ("sparseness",),
                                           key=K),
        "sparseness": lambda: metrics.sparseness(x),
        "complexity": lambda: metrics.complexity(x),
    }[name]


@pytest.mark.parametrize("name", [
    "deletion", "pixel_perturbation", "completeness", "faithfulness_correlation", "monotonicity",
    "infidelity", "max_sensitivity", "random_logit", "compare", "sparseness", "complexity"])
def test_an_empty_batch_is_a_clear_error(name):
    arg = "attribution" if name in ("sparseness", "complexity") else "x"
    with pytest.raises(ValueError, match=rf"^{arg} must hold at least one example; got an empty "
                                         r"batch of shape \(0, 6\)"):
        _empty(name)()
