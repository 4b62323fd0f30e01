"""GradientSHAP and DeepLIFT-SHAP: closed forms on linear models, convergence to integrated
gradients, summation to f(x) - mean f(b), and the mean of DeepLIFT over the baselines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A
from tests.attribution import twins

MLP = twins.mlp(twins.mlp_params(2))
X = twins.inputs(2, (5, 10), "signed")
T = np.array([0, 1, 2, 3, 4])
W = np.random.default_rng(4).normal(size=(10, 5)).astype(np.float32)
C = np.random.default_rng(5).normal(size=(5,)).astype(np.float32)


def linear(x):
    return x @ jnp.asarray(W) + jnp.asarray(C)


def test_gradient_shap_on_a_linear_model_is_exact_per_draw():
    """Every sample of a linear model sums to f(x)_t - f(b)_t: with baselines u + j v
    (j = 0..m-1) the result is (x - u - J v) w_t, J the mean of the drawn j, a multiple of
    1/samples in [0, m - 1]. Attributing to a mean baseline, a scaled difference or a missing
    alpha-independent factor breaks it."""
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(2, 10)).astype(np.float32)
    m, samples = 4, 7
    baselines = u + np.arange(m, dtype=np.float32)[:, None] * v
    attr = np.asarray(A.gradient_shap(linear, X, T, key=jax.random.key(1), baselines=baselines,
                                      samples=samples), np.float64)
    w = W[:, T].T  # (5, 10): w_t per example
    gap = np.asarray(linear(X) - linear(u[None]))[np.arange(5), T]
    J = (gap - attr.sum(axis=1)) / (w @ v)  # from the sum: f(x) - f(u) - J (v . w_t)
    counts = J * samples
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)
    assert (np.round(counts) >= 0).all() and (np.round(counts) <= samples * (m - 1)).all()
    assert len(set(np.round(counts))) > 1  # the draws differ between examples
    expected = (X - u - np.round(counts)[:, None] / samples * v) * w
    np.testing.assert_allclose(attr, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_gradient_shap_on_a_linear_model_converges_to_the_mean_baseline():
    """E[attr] = (x - mean b) w_t: with many samples, within 5 standard errors of the mean
    baseline index (uniform on 0..m-1, variance (m^2 - 1)/12)."""
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=(2, 10)).astype(np.float32)
    m, samples = 4, 4000
    baselines = u + np.arange(m, dtype=np.float32)[:, None] * v
    attr = np.asarray(A.gradient_shap(linear, X, T, key=jax.random.key(2), baselines=baselines,
                                      samples=samples, batch_size=1000), np.float64)
    w = W[:, T].T
    J = ((X - u) * w - attr).sum(axis=1) / (w @ v)
    se = np.sqrt((m ** 2 - 1) / 12 / samples)
    assert (np.abs(J - (m - 1) / 2) <= 5 * se).all(), (J, se)
    # the expected completeness, in closed form: mean over the baselines of f(b)
    expected_sum = (np.asarray(linear(X))[np.arange(5), T]
                    - np.asarray(linear(baselines))[:, T].mean(axis=0))
    tol = 5 * se * np.abs(w @ v)
    assert (np.abs(attr.sum(axis=1) - expected_sum) <= tol).all()


def test_gradient_shap_noise_is_absolute_and_enters_the_difference():
    """With one baseline b on a linear model, attr = (x - b + mean_k eps_k) w_t: the noise
    left in attr / w_t - (x - b) has standard deviation stdev / sqrt(samples), whatever the
    range of x (Captum's absolute stdevs, not SmoothGrad's relative one)."""
    x = 3.0 * X  # range ~ 15, so a relative stdev would be 15x larger
    b = np.full((1, 10), 0.5, np.float32)
    stdev, samples = 0.2, 16
    attr = np.asarray(A.gradient_shap(linear, x, T, key=jax.random.key(3), baselines=b,
                                      samples=samples, stdev=stdev), np.float64)
    noise = attr / W[:, T].T - (x - b)
    observed = noise.std()
    expected = stdev / np.sqrt(samples)
    # 50 values: the sample std is within 30% of the true one (about 3 standard errors)
    assert 0.7 * expected <= observed <= 1.3 * expected, (observed, expected)
    assert np.abs(noise.mean()) <= 5 * expected / np.sqrt(noise.size)


def test_gradient_shap_from_one_baseline_converges_to_integrated_gradients():
    """With one baseline and no noise, GradientSHAP is a Monte Carlo estimate of IG with
    alpha ~ U[0, 1]. The tolerance is 5 standard errors per element, from the variance of the
    integrand (x - b) grad f(b + alpha (x - b)) computed on 2000 midpoints."""
    b = (0.3 * twins.inputs(9, (1, 10), "signed")).astype(np.float32)
    steps, samples = 2000, 3000
    alphas = (np.arange(steps) + 0.5) / steps
    points = b + alphas[:, None, None] * (X - b)  # (steps, 5, 10)
    grads = np.asarray(A.gradient(MLP, points.reshape(-1, 10).astype(np.float32),
                                  np.tile(T, steps))).reshape(steps, 5, 10)
    integrand = (X - b) * grads.astype(np.float64)
    ig, var = integrand.mean(axis=0), integrand.var(axis=0)
    ours = np.asarray(A.gradient_shap(MLP, X, T, key=jax.random.key(4), baselines=b,
                                      samples=samples, batch_size=500), np.float64)
    se = np.sqrt(var / samples)
    assert se.max() < 0.05 * np.abs(ig).max()  # the tolerance is tight enough to mean something
    np.testing.assert_array_less(np.abs(ours - ig), 5 * se + 1e-5 * np.abs(ig).max())
    # and the reference is IG itself
    ref = A.integrated_gradients(MLP, X, T, baseline=b, steps=steps, method="riemann_middle")
    np.testing.assert_allclose(ig, ref, rtol=0, atol=1e-4 * np.abs(ig).max())
    # a handful of samples is not yet there: the check above has teeth
    few = np.asarray(A.gradient_shap(MLP, X, T, key=jax.random.key(4), baselines=b, samples=2))
    assert (np.abs(few - ig) > 5 * se + 1e-5 * np.abs(ig).max()).any()


def test_gradient_shap_depends_on_the_key_only_through_its_draws():
    opts = {"baselines": 0.1 * X, "samples": 6}
    a = A.gradient_shap(MLP, X, T, key=jax.random.key(0), **opts)
    np.testing.assert_array_equal(a, A.gradient_shap(MLP, X, T, key=jax.random.key(0), **opts))
    np.testing.assert_allclose(a, A.gradient_shap(MLP, X, T, key=jax.random.key(0), **opts,
                                                  batch_size=4), rtol=1e-5, atol=1e-6)
    other = A.gradient_shap(MLP, X, T, key=jax.random.key(1), **opts)
    assert np.abs(np.asarray(a - other)).max() > 1e-3


@pytest.mark.parametrize("net", ["mlp", "cnn max", "cnn avg"])
def test_deeplift_shap_sums_to_the_mean_gap_and_is_the_mean_of_deeplift(net):
    if net == "mlp":
        f, x, shape = MLP, X, (10,)
    else:
        f = twins.cnn(twins.cnn_params(3), pool=net[4:], last_pool=net[4:])
        x, shape = twins.inputs(3, (5, 8, 8, 2), "signed"), (8, 8, 2)
    baselines = (0.5 * twins.inputs(11, (4,) + shape, "signed")).astype(np.float32)
    attr = np.asarray(A.deeplift_shap(f, x, T, baselines=baselines, batch_size=3))
    gap = (np.asarray(f(x))[np.arange(5), T] - np.asarray(f(baselines))[:, T].mean(axis=0))
    np.testing.assert_allclose(attr.reshape(5, -1).sum(axis=1), gap, rtol=0,
                               atol=1e-5 * np.abs(gap).max())
    loop = np.mean([np.asarray(A.deeplift(f, x, T, baseline=np.broadcast_to(b, x.shape)))
                    for b in baselines], axis=0)
    assert twins.relative_error(attr, loop) <= 1e-5
    # one baseline: DeepLIFT itself
    one = A.deeplift_shap(f, x, T, baselines=baselines[:1])
    assert twins.relative_error(one, A.deeplift(f, x, T, baseline=baselines[:1])) <= 1e-6
