"""Faithfulness correlation, monotonicity (and its correlation), IROF, infidelity, random logit:
closed forms, a slow float64 reference with the same draws, batching and compilation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from jaxplain import metrics
from jaxplain.metrics import _correlation, _draws, _infidelity, _irof, _monotonicity
from jaxplain.metrics import _random_logit
from tests.metrics._models import grad as _grad
from tests.metrics._models import tiny_cnn as _tiny_cnn
from tests.metrics._reference import (np_faithfulness_correlation, np_infidelity, np_irof,
                                      np_monotonicity, np_monotonicity_correlation,
                                      np_random_logit)


def _linear(w):
    w = jnp.asarray(w, jnp.float32)
    return lambda x: x.reshape(len(x), -1) @ w


def _gxi(f, x, t):
    return _grad(f, x, t) * x


def _noise(key, x, samples, scale):
    """``(batch, samples, *x.shape[1:])``: the draws the metrics make for each example."""
    return np.stack([np.stack([np.asarray(_draws.gaussian(_draws.item_key(key, i, j), scale,
                                                          x[i]))
                               for j in range(samples)]) for i in range(len(x))])


# -- closed forms ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(12,), (3, 4, 2)])
def test_faithfulness_correlation_of_gradient_x_input_on_a_linear_model_is_one(shape):
    n = math.prod(shape)
    w = np.random.default_rng(0).normal(size=(n, 3))
    f = _linear(w)
    x = jax.random.normal(jax.random.key(0), (4, *shape))
    t = jnp.array([0, 1, 2, 0])
    a = _gxi(f, x, t)             # each pixel's channel sum is its exact contribution
    kw = dict(key=jax.random.key(1), subset_size=3, samples=20)
    np.testing.assert_allclose(metrics.faithfulness_correlation(f, x, t, a, **kw), 1.0,
                               atol=1e-5)
    np.testing.assert_allclose(metrics.faithfulness_correlation(f, x, t, -a, **kw), -1.0,
                               atol=1e-5)


def test_infidelity_closed_forms_on_a_linear_model():
    w = jnp.array([[1.0, 0.0], [-2.0, 0.0], [3.0, 0.0], [0.5, 0.0]])
    f = _linear(w)
    x = jax.random.uniform(jax.random.key(0), (3, 4), minval=0.5, maxval=2.0)
    key, sigma = jax.random.key(1), 0.3
    grad = _grad(f, x, 0)
    for scaled in (True, False):   # I · ∇f = f(x) − f(x − I) exactly
        np.testing.assert_allclose(
            metrics.infidelity(f, x, 0, grad, key=key, noise_scale=sigma, scaled=scaled), 0.0,
            atol=1e-9)
    # Gradient x input on a constant input is the gradient scaled by c: β = 1 / c undoes it.
    c = jnp.full((2, 4), 1.7)
    assert float(metrics.infidelity(f, c, 0, _gxi(f, c, 0), key=key, noise_scale=sigma,
                                    scaled=False).max()) > 0.01
    np.testing.assert_allclose(metrics.infidelity(f, c, 0, _gxi(f, c, 0), key=key,
                                                  noise_scale=sigma), 0.0, atol=1e-9)
    # Otherwise I · (w ⊙ x) − w · I = Σ I_i w_i (x_i − 1): E = σ² Σ w_i² (x_i − 1)².
    a = _gxi(f, x, 0)
    got = metrics.infidelity(f, x, 0, a, key=key, noise_scale=sigma, scaled=False,
                             samples=4000)
    expected = sigma**2 * ((w[:, 0] * (x - 1)) ** 2).sum(1)
    np.testing.assert_allclose(got, expected, rtol=0.1)
    scaled = metrics.infidelity(f, x, 0, a, key=key, noise_scale=sigma, samples=4000)
    assert np.all(np.asarray(scaled) <= np.asarray(got) + 1e-9)


def test_monotonicity_closed_forms():
    # w >= 0, x >= 0: every added feature adds w_i x_i >= 0, in any order.
    f = _linear(np.abs(np.random.default_rng(1).normal(size=(6, 2))))
    x = jax.random.uniform(jax.random.key(0), (3, 6))
    a = _gxi(f, x, 0)
    np.testing.assert_array_equal(metrics.monotonicity(f, x, 0, a, output="logit"), 1.0)
    np.testing.assert_array_equal(metrics.monotonicity(f, x, 0, -a, output="logit"), 1.0)
    # Mixed signs: step k >= 2 adds the k-th smallest contribution c_(k); it may not be < 0.
    w = np.array([[2.0], [-1.0], [0.5], [-3.0], [1.0], [0.25]])
    f = _linear(w)
    a = _gxi(f, x, 0)
    c = np.sort(np.asarray(a), axis=1)
    np.testing.assert_allclose(metrics.monotonicity(f, x, 0, a, output="logit"),
                               (c[:, 1:] >= 0).mean(1))
    # With an interaction the order matters: f = x1 + 3 x2 − 2 x1 x2 at (1, 1), baseline 0.
    # Shapley values (0, 2) add x1 first: +1 then +1; the reversed map adds x2: +3 then −1.
    g = lambda x: (x[:, :1] + 3 * x[:, 1:] - 2 * x[:, :1] * x[:, 1:])  # noqa: E731
    one = jnp.ones((1, 2))
    assert metrics.monotonicity(g, one, 0, jnp.array([[0.0, 2.0]]), output="logit") == 1.0
    assert metrics.monotonicity(g, one, 0, jnp.array([[2.0, 0.0]]), output="logit") == 0.0


def test_monotonicity_correlation_ranks_the_features_of_a_linear_model():
    w = np.array([[1.0], [-4.0], [0.25], [2.0], [-0.5], [8.0]])  # w² four times apart
    f = _linear(w)
    x = jax.random.normal(jax.random.key(0), (3, 6))
    kw = dict(key=jax.random.key(1), samples=200)
    grad = _grad(f, x, 0)
    np.testing.assert_allclose(metrics.monotonicity_correlation(f, x, 0, grad, **kw), 1.0)
    np.testing.assert_allclose(metrics.monotonicity_correlation(f, x, 0, 1 / grad, **kw), -1.0)
    # Two groups of three: {0.25, -0.5, 1} and {2, -4, 8} by |w|.
    np.testing.assert_allclose(metrics.monotonicity_correlation(f, x, 0, grad, steps=2, **kw),
                               1.0)


@pytest.mark.parametrize("position", [1, 2, 4])
def test_irof_on_a_planted_segment(position):
    # Class 0 reads only the top-left 2x2 quadrant (segment 0) of 4x4 ones; the map puts it
    # at `position` of 4 in the removal order. After its removal y = 0, before it y = y_0:
    # the area under y/y_0 is (position − 1/2) / 4.
    segments = np.repeat(np.repeat(np.arange(4).reshape(2, 2), 2, 0), 2, 1)
    planted = (segments == 0).astype(np.float32)
    f = lambda x: jnp.stack([(x[..., 0] * planted).sum((1, 2)),  # noqa: E731
                             x[..., 0].sum((1, 2))], 1)
    x = jnp.ones((1, 4, 4, 1))
    means = {1: [4, 3, 2, 1], 2: [3, 4, 2, 1], 4: [1, 4, 3, 2]}[position]
    a = jnp.asarray(np.asarray(means, np.float32)[segments][None, ..., None])
    got = metrics.irof(f, x, 0, a, segments, baseline="zeros", output="logit")
    np.testing.assert_allclose(got, [1 - (position - 0.5) / 4], rtol=1e-6)


def test_random_logit_of_a_linear_model_compares_two_columns():
    w = np.random.default_rng(2).normal(size=(16, 5))
    f = _linear(w)
    x = jax.random.normal(jax.random.key(0), (40, 4, 4, 1))
    t = jnp.arange(40) % 5
    key = jax.random.key(3)
    other = np.asarray(_random_logit.other_classes(key, t, classes=5))
    assert np.all(other != np.asarray(t)) and set(other) == set(range(5))
    got = metrics.random_logit(f, x, t, _grad, key=key, similarity="spearman")
    expected = [scipy.stats.spearmanr(w[:, int(ti)], w[:, o])[0] for ti, o in zip(t, other)]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    same = metrics.random_logit(f, x, t, lambda f, x, t: x, key=key, win_size=3)
    np.testing.assert_allclose(same, 1.0, rtol=1e-6)     # a map blind to the class: SSIM 1


# -- the slow float64 reference, with the same draws -------------------------------------------

@pytest.fixture(scope="module")
def cnn_case():
    f = _tiny_cnn()
    x = jax.random.uniform(jax.random.key(3), (3, 8, 8, 2))
    t = jnp.array([0, 3, 1])
    a = jax.random.normal(jax.random.key(4), x.shape)
    return f, x, t, a


def test_faithfulness_correlation_matches_the_reference(cnn_case):
    f, x, t, a = cnn_case
    key, samples, size = jax.random.key(5), 12, 10
    subsets = np.array([[np.asarray(_correlation.subset(_draws.item_key(key, i, j), 64, size))
                         for j in range(samples)] for i in range(3)])
    assert np.all(subsets.sum(-1) == size)
    # (probability drops of ~1e-3 would carry float32 rounding of ~1e-4 relative: not below)
    for kw in (dict(), dict(baseline="mean"), dict(baseline=0.9, output="probability")):
        got = metrics.faithfulness_correlation(f, x, t, a, key=key, subset_size=size,
                                               samples=samples, **kw)
        np.testing.assert_allclose(got, np_faithfulness_correlation(f, x, t, a, subsets, **kw),
                                   atol=1e-5)


@pytest.mark.parametrize("kw", [dict(), dict(steps=16, baseline=0.3, absolute=True),
                                dict(steps=8, output="logit", baseline="mean")])
def test_monotonicity_matches_the_reference(cnn_case, kw):
    f, x, t, a = cnn_case
    steps = kw.pop("steps", 64)
    got = metrics.monotonicity(f, x, t, a, steps=steps, **kw)
    np.testing.assert_allclose(got, np_monotonicity(f, x, t, a, steps=steps, **kw), atol=1e-5)


@pytest.mark.parametrize("steps,output", [(None, "logit"), (8, "probability")])
def test_monotonicity_correlation_matches_the_reference(cnn_case, steps, output):
    # (one pixel moves a probability by ~1e-5, which float32 resolves to ~1e-3 relative: two
    # effects that close may swap ranks, so single pixels are compared on the logit only)
    f, x, t, a = cnn_case
    key, samples, scale = jax.random.key(6), 4, 0.2
    got = metrics.monotonicity_correlation(f, x, t, a, key=key, samples=samples,
                                           noise_scale=scale, steps=steps, output=output)
    ref = np_monotonicity_correlation(f, x, t, a, _noise(key, x, samples, scale),
                                      steps=steps or 64, output=output)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_irof_matches_the_reference_with_shared_and_per_example_segments(cnn_case):
    f, x, t, a = cnn_case
    blocks = np.repeat(np.repeat(np.arange(16).reshape(4, 4), 2, 0), 2, 1) * 7 + 3  # any ids
    rng = np.random.default_rng(0)
    own = np.stack([blocks, rng.integers(0, 5, (8, 8)), rng.integers(10, 30, (8, 8))])
    for segments, kw in ((blocks, dict()), (own, dict(baseline="zeros", output="logit"))):
        got = metrics.irof(f, x, t, a, segments, **kw)
        full = np.broadcast_to(segments, (3, 8, 8))
        np.testing.assert_allclose(got, np_irof(f, x, t, a, full, **kw), atol=1e-5)


@pytest.mark.parametrize("scaled,output", [(True, "logit"), (False, "probability")])
def test_infidelity_matches_the_reference(cnn_case, scaled, output):
    f, x, t, a = cnn_case
    key, samples, scale = jax.random.key(7), 6, 0.1
    got = metrics.infidelity(f, x, t, a, key=key, samples=samples, noise_scale=scale,
                             scaled=scaled, output=output)
    ref = np_infidelity(f, x, t, a, _noise(key, x, samples, scale), scaled=scaled,
                        output=output)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("similarity", ["ssim", "spearman"])
def test_random_logit_matches_the_reference(cnn_case, similarity):
    f, x, t, _ = cnn_case
    key = jax.random.key(8)
    other = _random_logit.other_classes(key, t, classes=4)
    got = metrics.random_logit(f, x, t, _gxi, key=key, similarity=similarity)
    ref = np_random_logit(_gxi(f, x, t), _gxi(f, x, other), similarity=similarity)
    np.testing.assert_allclose(got, ref, atol=1e-5)


# -- batching and compilation ------------------------------------------------------------------

_KEY = jax.random.key(9)
_RUNS = {
    "faithfulness_correlation": (
        lambda f, x, t, a, **kw: metrics.faithfulness_correlation(
            f, x, t, a, key=_KEY, subset_size=8, samples=5, **kw),
        _correlation._correlation),
    "monotonicity": (lambda f, x, t, a, **kw: metrics.monotonicity(f, x, t, a, steps=8, **kw),
                     _monotonicity._monotonicity),
    "monotonicity_correlation": (
        lambda f, x, t, a, **kw: metrics.monotonicity_correlation(
            f, x, t, a, key=_KEY, samples=3, steps=6, **kw),
        _monotonicity._monotonicity_correlation),
    "irof": (lambda f, x, t, a, **kw: metrics.irof(
        f, x, t, a, np.arange(64).reshape(8, 8) // 10, **kw), _irof._irof),
    "infidelity": (lambda f, x, t, a, **kw: metrics.infidelity(
        f, x, t, a, key=_KEY, samples=5, **kw), _infidelity._infidelity),
}


@pytest.mark.parametrize("name", sorted(_RUNS))
def test_first_k_examples_chunks_and_no_retrace(name):
    run, compiled = _RUNS[name]
    f = _tiny_cnn()
    x = jax.random.uniform(jax.random.key(10), (5, 8, 8, 2))
    t = jnp.array([0, 1, 2, 3, 1])
    a = jax.random.normal(jax.random.key(11), x.shape)
    full = np.asarray(run(f, x, t, a))
    assert full.shape == (5,) and np.all(np.isfinite(full))
    np.testing.assert_allclose(run(f, x[:2], t[:2], a[:2]), full[:2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run(f, x, t, a, batch_size=7), full, rtol=1e-5, atol=1e-6)
    before = compiled._cache_size()
    run(f, x * 0.5, (t + 1) % 4, a + 1.0)
    assert compiled._cache_size() == before


def test_a_new_noise_scale_does_not_recompile():
    f = _tiny_cnn()
    x = jax.random.uniform(jax.random.key(10), (2, 8, 8, 2))
    a = jax.random.normal(jax.random.key(11), x.shape)
    metrics.infidelity(f, x, 0, a, key=_KEY, samples=3, noise_scale=0.1)
    before = _infidelity._infidelity._cache_size()
    metrics.infidelity(f, x, 0, a, key=_KEY, samples=3, noise_scale=0.3)
    assert _infidelity._infidelity._cache_size() == before


def test_under_a_users_jit_and_for_a_channels_first_model():
    f = _tiny_cnn()
    x = jax.random.uniform(jax.random.key(14), (3, 8, 8, 2))
    t = jnp.array([0, 1, 2])
    a = jax.random.normal(jax.random.key(15), x.shape)
    run = _RUNS["infidelity"][0]
    np.testing.assert_allclose(jax.jit(lambda x, a: run(f, x, t, a))(x, a), run(f, x, t, a),
                               rtol=1e-5, atol=1e-7)
    # An NCHW twin: pixels are ranked, drawn and replaced as the NHWC model's.
    nchw = lambda z: f(jnp.moveaxis(z, 1, -1))  # noqa: E731
    to_nchw = lambda z: jnp.moveaxis(z, -1, 1)  # noqa: E731
    for name in ("faithfulness_correlation", "monotonicity", "irof"):
        run = _RUNS[name][0]
        np.testing.assert_allclose(run(nchw, to_nchw(x), t, to_nchw(a)), run(f, x, t, a),
                                   rtol=1e-5, atol=1e-6, err_msg=name)


def test_random_logit_first_k_and_no_retrace():
    f = _tiny_cnn()
    x = jax.random.uniform(jax.random.key(12), (5, 8, 8, 2))
    t = jnp.array([0, 1, 2, 3, 1])
    full = np.asarray(metrics.random_logit(f, x, t, _gxi, key=_KEY))
    np.testing.assert_allclose(metrics.random_logit(f, x[:3], t[:3], _gxi, key=_KEY), full[:3],
                               rtol=1e-5, atol=1e-6)
    before = _random_logit._similarity._cache_size()
    metrics.random_logit(f, x * 0.5, t, _gxi, key=_KEY)
    assert _random_logit._similarity._cache_size() == before


# -- errors -------------------------------------------------------------------------------------

def test_errors_name_the_argument():
    f = _tiny_cnn()
    x = jax.random.uniform(jax.random.key(13), (2, 8, 8, 2))
    a = jnp.ones(x.shape)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="samples must be an int >= 2, got 1"):
        metrics.faithfulness_correlation(f, x, 0, a, key=key, subset_size=4, samples=1)
    with pytest.raises(ValueError, match="subset_size must be below the number of features 64"):
        metrics.faithfulness_correlation(f, x, 0, a, key=key, subset_size=64)
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        metrics.infidelity(f, x, 0, a, key=0)
    with pytest.raises(ValueError, match="samples must be an int >= 2"):
        metrics.infidelity(f, x, 0, a, key=key, samples=1)
    with pytest.raises(ValueError, match="noise_scale must be a positive number, got 0"):
        metrics.monotonicity_correlation(f, x, 0, a, key=key, noise_scale=0)
    with pytest.raises(ValueError, match="attribution must have the shape of x"):
        metrics.infidelity(f, x, 0, a.sum(-1, keepdims=True), key=key)
    with pytest.raises(ValueError, match="steps must be at most the number of features 64"):
        metrics.monotonicity(f, x, 0, a, steps=65)
    with pytest.raises(ValueError, match='"blur" is offered by deletion and insertion only'):
        metrics.monotonicity(f, x, 0, a, baseline="blur")
    with pytest.raises(ValueError, match=r"segments must have the shape of the grid of "
                                         r"features \(8, 8\).*got \(8, 8, 2\)"):
        metrics.irof(f, x, 0, a, np.zeros((8, 8, 2), int))
    with pytest.raises(ValueError, match=r"got \(3, 8, 8\)"):
        metrics.irof(f, x, 0, a, np.zeros((3, 8, 8), int))
    with pytest.raises(TypeError, match="segments must hold integer segment ids"):
        metrics.irof(f, x, 0, a, np.zeros((8, 8)))
    with pytest.raises(ValueError, match="at least 2 segments, got 1 for example 0"):
        metrics.irof(f, x, 0, a, np.zeros((8, 8), int))
    with pytest.raises(ValueError, match='pass similarity="spearman"'):
        metrics.random_logit(_linear(np.ones((6, 3))), jnp.ones((2, 6)), 0, _grad, key=key)
    with pytest.raises(ValueError, match="similarity must be one of"):
        metrics.random_logit(f, x, 0, _grad, key=key, similarity="pearson")
    with pytest.raises(ValueError, match="at least 2 classes"):
        metrics.random_logit(_linear(np.ones((6, 1))), jnp.ones((2, 6)), 0, _grad, key=key,
                             similarity="spearman")


# -- documentation --------------------------------------------------------------------------------

def test_the_docs_example_runs_and_scores_every_example():
    import pathlib
    import re

    text = (pathlib.Path(__file__).parents[2] / "docs" / "metrics.md").read_text(encoding="utf-8")
    section = text[text.index("## Correlation, monotonicity, IROF"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    lines = block.splitlines()
    first = next(i for i, s in enumerate(lines) if s.startswith("metrics."))
    scope: dict = {}
    exec("\n".join(lines[:first]), scope)
    for line in lines[first:]:
        value = np.asarray(eval(line.split("#")[0].strip(), scope))
        assert value.shape == (16,) and np.all(np.isfinite(value)), line
