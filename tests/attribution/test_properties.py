"""Defining properties: IG completeness, SmoothGrad at zero noise, Shapley efficiency,
KernelSHAP = exact Shapley values, LIME on a planted linear model, closed forms at sites."""

import itertools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A
from jaxplain.lrp import Epsilon
from jaxplain.attribution._integrated import quadrature
from tests.attribution import twins

KEY = jax.random.key(3)
MLP = twins.mlp(twins.mlp_params(2))
X = twins.inputs(2, (5, 10), "signed")
T = np.array([0, 1, 2, 3, 4])


def smooth4(x):
    """A non-linear 4-feature model with interactions (two outputs)."""
    a, b, c, d = (x[:, i] for i in range(4))
    y0 = a * b + jnp.sin(c) * d + a ** 2 - 0.5 * b * c * d
    return jnp.stack([y0, a - d], axis=1)


def exact_shapley(f, x, target, baseline):
    """Brute-force Shapley values of one example (float64)."""
    m = x.shape[0]

    def v(coalition):
        z = np.where(np.isin(np.arange(m), coalition), x, baseline)
        return float(np.asarray(f(jnp.asarray(z[None], jnp.float32)))[0, target])

    phi = np.zeros(m)
    for i in range(m):
        others = [j for j in range(m) if j != i]
        for size in range(m):
            for s in itertools.combinations(others, size):
                w = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
                phi[i] += w * (v(list(s) + [i]) - v(list(s)))
    return phi


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_middle"])
def test_quadrature_weights(method):
    alphas, weights = quadrature(method, 7)
    assert alphas.min() >= 0 and alphas.max() <= 1
    total = 6 / 7 if method == "riemann_trapezoid" else 1.0  # Captum's trapezoid weights
    np.testing.assert_allclose(weights.sum(), total, rtol=1e-12)
    # integrates a cubic exactly (Gauss-Legendre) / to O(1/n^2) (middle)
    approx = (weights * alphas ** 3).sum()
    if method == "gausslegendre":
        np.testing.assert_allclose(approx, 0.25, rtol=1e-12)


def test_integrated_gradients_completeness():
    b = 0.2 * twins.inputs(9, X.shape, "signed")
    attr = A.integrated_gradients(MLP, X, T, baseline=b, steps=400, method="riemann_middle")
    delta = A.completeness_delta(MLP, X, T, attr, baseline=b)
    gap = np.abs(np.asarray(MLP(X) - MLP(b))[np.arange(5), T])
    assert (np.abs(np.asarray(delta)) <= 2e-3 * np.maximum(gap, 1)).all()
    # on a smooth model Gauss-Legendre converges fast
    x4 = np.array([[0.5, -1.0, 2.0, 0.3]], np.float32)
    attr = A.integrated_gradients(smooth4, x4, 0, steps=16)
    assert abs(float(A.completeness_delta(smooth4, x4, 0, attr)[0])) < 1e-5


@pytest.mark.parametrize("kind", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_smoothgrad_without_noise_is_the_wrapped_method(kind):
    for method, opts in ((A.gradient, {}), (A.integrated_gradients, {"steps": 5})):
        plain = np.asarray(method(MLP, X, T, **opts))
        smooth = A.smoothgrad(MLP, X, T, key=KEY, stdev=0.0, samples=3, kind=kind, method=method,
                              method_options=opts)
        expected = {"smoothgrad": plain, "smoothgrad_sq": plain ** 2,
                    "vargrad": np.zeros_like(plain)}[kind]
        np.testing.assert_allclose(smooth, expected, rtol=1e-5, atol=1e-6)


def test_smoothgrad_matches_a_monte_carlo_loop():
    # the same noise drawn by hand: per-example relative sigma, split keys
    samples, stdev = 4, 0.2
    keys = jax.random.split(KEY, samples)
    span = X.max(1, keepdims=True) - X.min(1, keepdims=True)
    grads = [np.asarray(A.gradient(MLP, X + stdev * span * jax.random.normal(k, X.shape), T))
             for k in keys]
    out = A.smoothgrad(MLP, X, T, key=KEY, samples=samples, stdev=stdev, kind="vargrad")
    np.testing.assert_allclose(out, np.var(np.stack(grads), axis=0), rtol=1e-3, atol=1e-5)


def test_shapley_sampling_efficiency_and_convergence():
    b = 0.1 * twins.inputs(4, X.shape, "signed")
    attr = A.shapley_sampling(MLP, X, T, key=KEY, samples=3, baseline=b)
    gap = np.asarray(MLP(X) - MLP(b))[np.arange(5), T]
    np.testing.assert_allclose(np.asarray(attr).sum(1), gap, rtol=1e-4, atol=1e-5)
    x4 = np.array([[0.5, -1.0, 2.0, 0.3]], np.float32)
    est = A.shapley_sampling(smooth4, x4, 0, key=KEY, samples=600)
    np.testing.assert_allclose(est[0], exact_shapley(smooth4, x4[0], 0, np.zeros(4)), atol=0.05)


def test_kernel_shap_is_exact_shapley_on_four_features():
    x4 = np.array([[0.5, -1.0, 2.0, 0.3], [1.2, 0.7, -0.4, 2.0]], np.float32)
    b = np.array([0.1, 0.2, -0.3, 0.0], np.float32)
    ours = np.asarray(A.kernel_shap(smooth4, x4, 0, baseline=b))
    for i in range(2):
        np.testing.assert_allclose(ours[i], exact_shapley(smooth4, x4[i], 0, b), rtol=1e-4, atol=1e-5)
    sampled = np.asarray(A.kernel_shap(smooth4, x4, 0, baseline=b, key=KEY, samples=4000))
    np.testing.assert_allclose(sampled, ours, atol=0.1)
    gap = np.asarray(smooth4(x4) - smooth4(jnp.broadcast_to(b, x4.shape)))[:, 0]
    np.testing.assert_allclose(sampled.sum(1), gap, rtol=1e-4)  # efficiency holds exactly


def test_groups_share_values_and_match_exact_shapley_of_groups():
    x4 = np.array([[0.5, -1.0, 2.0, 0.3]], np.float32)
    mask = np.array([0, 0, 1, 1])

    def grouped(z):  # the same model as a 2-player game
        return smooth4(z)

    ours = np.asarray(A.kernel_shap(grouped, x4, 0, feature_mask=mask))[0]
    v = {s: float(smooth4(jnp.asarray(np.where(np.isin(mask, s), x4[0], 0)[None]))[0, 0])
         for s in [(), (0,), (1,), (0, 1)]}
    phi0 = 0.5 * (v[(0,)] - v[()]) + 0.5 * (v[(0, 1)] - v[(1,)])
    np.testing.assert_allclose(ours[:2], phi0, rtol=1e-5)
    np.testing.assert_allclose(ours[2:], v[(0, 1)] - v[()] - phi0, rtol=1e-5)


def test_lime_recovers_a_planted_linear_model():
    w = np.array([[1.0, 0.0], [-2.0, 1.0], [0.5, 0.0], [3.0, 1.0], [0.0, 0.0]], np.float32)
    x = twins.inputs(5, (3, 5), "signed")
    lin = lambda z: z @ jnp.asarray(w)  # noqa: E731
    coef = A.lime(lin, x, 0, key=KEY, samples=64, ridge=0.0)
    np.testing.assert_allclose(coef, x * w[:, 0], rtol=1e-4, atol=1e-5)
    coef = A.kernel_shap(lin, x, 0, key=KEY, samples=64)
    np.testing.assert_allclose(coef, x * w[:, 0], rtol=1e-4, atol=1e-5)


def test_occlusion_and_ablation_closed_forms():
    lin_w = np.arange(1.0, 7.0, dtype=np.float32)[:, None]
    lin = lambda z: z @ jnp.asarray(lin_w)  # noqa: E731
    x = np.ones((1, 6), np.float32)
    # single-element windows / groups: each feature's own contribution
    np.testing.assert_allclose(A.occlusion(lin, x, 0, window=1), x * lin_w.T)
    np.testing.assert_allclose(A.feature_ablation(lin, x, 0), x * lin_w.T)
    # window 4, stride 2 on 6 positions: windows [0:4], [2:6]; positions 2, 3 averaged
    occ = np.asarray(A.occlusion(lin, x, 0, window=4, stride=2))[0]
    first, second = lin_w[:4].sum(), lin_w[2:].sum()
    np.testing.assert_allclose(occ, [first, first, (first + second) / 2, (first + second) / 2,
                                     second, second])
    # window 4, stride 3: windows [0:4], [3:6] (the last one cut at the border)
    occ = np.asarray(A.occlusion(lin, x, 0, window=4, stride=3))[0]
    second = lin_w[3:].sum()
    np.testing.assert_allclose(occ[[0, 3, 5]], [first, (first + second) / 2, second])


def _site_model():
    rng = np.random.default_rng(0)
    w1 = jnp.asarray(rng.normal(size=(3, 3, 1, 4)) * 0.5, jnp.float32)
    wd = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)

    def f(x):
        with jax.named_scope("features"):
            h = jax.nn.relu(jax.lax.conv_general_dilated(x, w1, (1, 1), "SAME",
                                                         dimension_numbers=("NHWC", "HWIO", "NHWC")))
        return h.mean(axis=(1, 2)) @ wd

    return f, w1, wd


def test_grad_cam_closed_form():
    f, w1, wd = _site_model()
    x = twins.inputs(1, (3, 6, 6, 1), "signed")
    t = np.array([0, 1, 2])
    h = np.maximum(np.asarray(jax.lax.conv_general_dilated(
        x, w1, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))), 0)
    weights = np.asarray(wd)[:, t].T / 36.0  # d f_t / d h = wd[:, t] / (h * w), uniform in space
    expected = np.maximum(np.einsum("nhwc,nc->nhw", h, weights), 0)
    np.testing.assert_allclose(A.grad_cam(f, x, t, site="features", resize=False), expected,
                               rtol=1e-5, atol=1e-6)
    up = A.grad_cam(f, x, t, site="features")
    assert up.shape == (3, 6, 6, 1)
    np.testing.assert_allclose(up[..., 0], expected, rtol=1e-5, atol=1e-6)  # same size: identity
    chan = np.asarray(A.activation_x_gradient(f, x, t, site="features")).sum(axis=(1, 2))
    np.testing.assert_allclose(chan, h.mean(axis=(1, 2)) * np.asarray(wd)[:, t].T, rtol=1e-5,
                               atol=1e-6)


def test_conductance_sums_to_integrated_gradients():
    f, _, _ = _site_model()
    x = twins.inputs(2, (3, 6, 6, 1), "signed")
    t = np.array([0, 1, 2])
    for method in ("gausslegendre", "riemann_trapezoid"):
        cond = A.layer_conductance(f, x, t, site="features", steps=12, method=method)
        ig = A.integrated_gradients(f, x, t, steps=12, method=method)
        np.testing.assert_allclose(np.asarray(cond).sum(axis=(1, 2, 3)),
                                   np.asarray(ig).sum(axis=(1, 2, 3)), rtol=1e-4, atol=1e-6)


def test_site_output_explains_a_neuron():
    f, w1, _ = _site_model()
    x = twins.inputs(3, (2, 6, 6, 1), "signed")
    g = A.gradient(A.site_output(f, "features", reduce="sum"), x, 2)
    direct = jax.grad(lambda z: jax.nn.relu(jax.lax.conv_general_dilated(
        z, w1, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))[..., 2].sum())(x)
    np.testing.assert_allclose(g, direct, rtol=1e-5, atol=1e-6)


def test_deeplift_sums_to_delta_on_relu_nets():
    b = 0.3 * twins.inputs(6, X.shape, "signed")
    attr = A.deeplift(MLP, X, T, baseline=b)
    delta = A.completeness_delta(MLP, X, T, attr, baseline=b)
    assert np.abs(np.asarray(delta)).max() < 1e-4


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("pools", [("max", "avg"), ("max", "max"), ("avg", "max")])
def test_deeplift_sums_to_delta_through_max_pools(seed, pools):
    """The max-pool rule splits each window's output difference between the input's and the
    reference's maxima, so the sum holds through max pools (the plain gradient there misses
    it by up to ~1 logit on these nets)."""
    f = twins.cnn(twins.cnn_params(seed), pool=pools[0], last_pool=pools[1])
    x = twins.inputs(seed, (4, 8, 8, 2), "signed")
    t = np.arange(4) % 5
    for b in (np.zeros_like(x), 0.3 * twins.inputs(seed + 7, x.shape, "signed")):
        delta = A.completeness_delta(f, x, t, A.deeplift(f, x, t, baseline=b), baseline=b)
        assert np.abs(np.asarray(delta)).max() < 1e-4


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "silu"])
def test_deeplift_sums_to_delta_through_gelu_and_silu(activation):
    """The rescale rule applies at every activation site, jax.nn.gelu included (one site, not
    its inner tanh), so DeepLIFT's summation-to-delta holds on these nets too."""
    f = twins.mlp(twins.mlp_params(2), activation=activation)
    b = 0.3 * twins.inputs(6, X.shape, "signed")
    attr = A.deeplift(f, X, T, baseline=b)
    delta = A.completeness_delta(f, X, T, attr, baseline=b)
    assert np.abs(np.asarray(delta)).max() < 1e-4


def _softmax_head_models():
    w1 = jax.random.normal(jax.random.key(10), (48, 16)) * 0.5
    w2 = jax.random.normal(jax.random.key(11), (16, 4))

    def logits(x):
        return jax.nn.relu(x.reshape(len(x), -1) @ w1) @ w2

    def probabilities(x):
        return jax.nn.softmax(logits(x))

    return logits, probabilities


SUMMING = {  # methods whose sum a final softmax breaks, with their options
    "deeplift": (A.deeplift, {}),
    "deeplift_shap": (A.deeplift_shap, {"baselines": jnp.zeros((2, 4, 4, 3))}),
    "lrp": (A.lrp, {"rules": Epsilon(1e-6)}),
    "conservative_propagation": (A.conservative_propagation, {}),
    "attn_lrp": (A.attn_lrp, {}),
}


@pytest.mark.parametrize("name", sorted(SUMMING))
def test_a_softmax_output_warns_where_summation_is_promised(name):
    method, opts = SUMMING[name]
    logits, probabilities = _softmax_head_models()
    x = jax.random.uniform(jax.random.key(12), (3, 4, 4, 3))
    t = np.asarray(logits(x).argmax(-1))
    with pytest.warns(UserWarning, match=rf"^{name}: the model's output is a jax.nn.softmax.*"
                                         r"Explain the logits") as record:
        got = method(probabilities, x, t, **opts)
    assert record[0].filename == __file__  # points at the caller's line
    gap = probabilities(x)[np.arange(3), t]
    if name.startswith("deeplift"):
        gap = gap - probabilities(jnp.zeros_like(x))[np.arange(3), t]
    if name != "lrp":  # the sum it promises (lrp's one-hot: 1) is indeed lost
        assert np.abs(np.asarray(got).reshape(3, -1).sum(1) - gap).max() > 1e-2
    else:
        assert np.abs(np.asarray(got).reshape(3, -1).sum(1) - 1.0).max() > 1e-2
    with pytest.warns(UserWarning, match="log_softmax"):
        method(lambda z: jax.nn.log_softmax(logits(z)), x, t, **opts)


@pytest.mark.parametrize("name", sorted(SUMMING))
def test_logits_get_no_warning(name):
    method, opts = SUMMING[name]
    logits, _ = _softmax_head_models()
    x = jax.random.uniform(jax.random.key(12), (3, 4, 4, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        method(logits, x, np.asarray(logits(x).argmax(-1)), **opts)
        method(lambda z: jax.nn.sigmoid(logits(z)), x, 0, **opts)  # rescaled elementwise: fine
    assert not [str(w.message) for w in caught if "the model's output is" in str(w.message)]
