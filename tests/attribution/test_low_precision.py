"""Low precision: the model runs in its own dtype (bfloat16, float16), the methods' own
arithmetic (quadrature, interpolation, sums, rule divisions, closed forms, draws, fits) in
float32, and the attributions come back in ``x``'s dtype (docs/attribution.md, "Low
precision").

Each test fails on the arithmetic it guards when done in the model's dtype: a crash, a
``nan``, a wrong dtype, or an error well past the one the model's own rounding gives.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxplain import attribution as A
from jaxplain import lrp as L
from jaxplain.attribution import _cam
from jaxplain.attribution._integrated import quadrature

BF16, F16 = jnp.bfloat16, jnp.float16
W1 = jax.random.normal(jax.random.key(0), (6, 8))
W2 = jax.random.normal(jax.random.key(1), (8, 3))
X = jax.random.uniform(jax.random.key(2), (4, 6), minval=-1.0, maxval=1.0)
T = np.array([0, 1, 2, 0])


def mlp(x):
    """A bias-free ReLU MLP in x's dtype (a model cast to bfloat16 or float16)."""
    return jax.nn.relu(x @ W1.astype(x.dtype)) @ W2.astype(x.dtype)


def mixed(x):
    """A mixed-precision model: any x is cast to bfloat16, the logits come out in float32."""
    h = jax.nn.relu(x.astype(BF16) @ W1.astype(BF16))
    return (h @ W2.astype(BF16)).astype(jnp.float32)


K = jax.random.normal(jax.random.key(3), (3, 3, 1, 4))
HEAD = jax.random.normal(jax.random.key(4), (4, 3))
IMAGES = jax.random.uniform(jax.random.key(5), (2, 6, 6, 1))


def cnn(x, dtype=None):
    """A convolution, a ReLU (site "features") and a linear head, in `dtype` (None: x's)."""
    dtype = dtype or x.dtype
    h = lax.conv_general_dilated(x.astype(dtype), K.astype(dtype), (1, 1), "SAME",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    with jax.named_scope("features"):
        h = jax.nn.relu(h)
    return h.mean(axis=(1, 2)) @ HEAD.astype(dtype)


def cnn_bf16(x):
    return cnn(x, BF16)


def cnn_f32(x):
    return cnn(x, jnp.float32)


def relative(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("dtype", [BF16, F16])
def test_surrogates_fit_low_precision_models(dtype):
    # jnp.linalg.lstsq takes no bfloat16 or float16: the fits run in float32
    x = X.astype(dtype)
    ks = A.kernel_shap(mlp, x, T, feature_mask=np.array([0, 0, 1, 1, 2, 3]))
    li = A.lime(mlp, x, T, key=jax.random.key(0), samples=64)
    assert ks.dtype == li.dtype == dtype
    logits = np.asarray(mlp(x), np.float64)[np.arange(4), T]
    gap = logits - np.asarray(mlp(jnp.zeros_like(x)), np.float64)[np.arange(4), T]
    sums = np.asarray(ks, np.float64)[:, [0, 2, 4, 5]].sum(axis=1)  # one member per group
    np.testing.assert_allclose(sums, gap, atol=0.02 * np.abs(gap).max())  # efficiency


def test_integrated_gradients_of_a_float32_input_through_a_bfloat16_model():
    # the stem (first dense layer) is bfloat16; its interpolated values must stay so
    ig = A.integrated_gradients(mixed, X, T, steps=16)
    assert ig.dtype == jnp.float32
    ref = A.integrated_gradients(mlp, X, T, steps=16)  # the same weights in float32
    assert relative(ig, ref) < 0.03
    sg = A.smoothgrad(mixed, X, T, key=jax.random.key(0), samples=2,
                      method=A.integrated_gradients, method_options={"steps": 8})
    assert sg.dtype == jnp.float32 and np.isfinite(np.asarray(sg)).all()


def test_deeplift_at_float16_where_an_example_equals_its_baseline():
    # eps = 1e-10 is 0 in float16: dz == 0 gave 0 / 0
    x = jnp.concatenate([X[:2], jnp.zeros((1, 6))]).astype(F16)
    t = np.array([0, 1, 2])
    dl = A.deeplift(mlp, x, t)
    assert dl.dtype == F16 and np.isfinite(np.asarray(dl, np.float32)).all()
    np.testing.assert_array_equal(np.asarray(dl[2], np.float32), 0)
    ref = A.deeplift(mlp, x.astype(jnp.float32), t)
    assert relative(dl, ref) < 5e-3
    shap = A.deeplift_shap(mlp, x, t, baselines=jnp.zeros((2, 6), F16).at[1].set(x[0]))
    assert np.isfinite(np.asarray(shap, np.float32)).all()


@pytest.mark.parametrize("spelling", ["matmul", "dot_general"])
@pytest.mark.parametrize("rule", [L.AlphaBeta(2.0, 1.0), L.ZPlus(), L.Epsilon(1e-6)])
def test_lrp_at_float16_with_a_dead_unit(rule, spelling):
    # hidden unit 2 is dead (0 into the second layer): R / stab(0) = R / 1e-6 overflows
    # float16, and 0 * inf was nan. `x @ w` keeps float16 products, lax.dot_general widens.
    w1, w2 = jnp.array([[1.0, -1.0], [0.5, -2.0]]), jnp.array([[1.0, 0.2], [0.3, -1.0]])
    dot = (jnp.matmul if spelling == "matmul" else
           lambda a, b: lax.dot_general(a, b, (((1,), (0,)), ((), ()))))

    def f(x):
        return dot(jax.nn.relu(dot(x, w1.astype(x.dtype))), w2.astype(x.dtype))

    x = jnp.array([[1.0, 0.5]])
    low = A.lrp(f, x.astype(F16), 0, rules=rule)
    assert low.dtype == F16
    assert relative(low, A.lrp(f, x, 0, rules=rule)) < 2e-3


def test_completeness_delta_is_not_rounded_to_bfloat16():
    x = X.astype(BF16)
    a = A.integrated_gradients(mlp, x, T, steps=32)
    delta = A.completeness_delta(mlp, x, T, a)
    rows = np.arange(4)
    gap = (np.asarray(mlp(x), np.float64)[rows, T]
           - np.asarray(mlp(jnp.zeros_like(x)), np.float64)[rows, T])
    exact = np.asarray(a, np.float64).sum(axis=1) - gap  # the same values, summed in float64
    np.testing.assert_allclose(np.asarray(delta, np.float64), exact,
                               atol=1e-5 * np.abs(gap).max())
    assert delta.dtype == jnp.float32


def kinked(x):
    """``sum relu(2 x)``, the site "hidden" being ``2 x``."""
    with jax.named_scope("hidden"):
        h = 2 * x
    return jax.nn.relu(h).sum(axis=1, keepdims=True)


@pytest.mark.parametrize("method", ["integrated_gradients", "layer_integrated_gradients",
                                    "layer_conductance"])
def test_paths_interpolate_in_float32_at_bfloat16(method):
    # Unit 0 goes from 1 to -0.4902 along the path (exact in bfloat16), through the ReLU's
    # kink at alpha = 0.67103: between the third Gauss-Legendre node of 4, 0.66999, and that
    # node rounded to bfloat16, 0.67188. With the alphas (and the interpolation) in bfloat16
    # the node fell past the kink and lost its weight: -0.746 instead of -1.231. (Layer IG on
    # a digits model was 14.6% off float32 so, where bfloat16 itself costs 3.5%.)
    x, baseline = jnp.array([[-0.2451171875, 0.75]], BF16), 0.5
    site = {} if method == "integrated_gradients" else {"site": "hidden"}
    ours = getattr(A, method)(kinked, x, 0, steps=4, baseline=baseline, **site)
    assert ours.dtype == BF16
    alphas, weights = quadrature("gausslegendre", 4)
    start, end = 2 * baseline, 2 * np.asarray(x, np.float64)[0]
    on = start + alphas[:, None] * (end - start) > 0  # (steps, units), in float64
    reference = (end - start) * (weights[:, None] * on).sum(axis=0)
    np.testing.assert_allclose(np.asarray(ours, np.float64)[0], reference, rtol=4e-3)


def test_grad_cam_plus_plus_closed_form_in_float32():
    # g² / (2g² + S g³) evaluated in bfloat16 rounded g² and g³ (3.9% on a digits model)
    a = jax.random.uniform(jax.random.key(6), (2, 4, 4, 3), BF16, 0.0, 3.0)
    g = jax.random.normal(jax.random.key(7), (2, 4, 4, 3), BF16) * 0.05
    a64, g64 = np.asarray(a, np.float64), np.asarray(g, np.float64)
    den = 2 * g64 ** 2 + a64.sum(axis=(1, 2), keepdims=True) * g64 ** 3
    alpha = np.where(den != 0, g64 ** 2 / np.where(den != 0, den, 1), 0)
    reference = (alpha * np.maximum(g64, 0)).sum(axis=(1, 2), keepdims=True)
    weights = _cam.plus_plus_weights(a, g)
    assert relative(weights, reference) < 1e-5
    assert weights.dtype == jnp.float32
    cam = A.grad_cam_plus_plus(cnn, IMAGES.astype(BF16), np.array([0, 1]), site="features")
    assert cam.dtype == BF16 and np.isfinite(np.asarray(cam, np.float32)).all()


def _noisy_input(f, x, target):
    """An "attribution method" that returns its input: smoothgrad then returns its noise."""
    return x


def test_random_draws_do_not_depend_on_the_input_dtype():
    # the same key gave other noise (and GradientSHAP 128 distinct alphas) for bfloat16 x
    x = jnp.arange(12.0).reshape(2, 6) / 16  # exact in bfloat16
    key = jax.random.key(0)
    noisy = A.smoothgrad(mlp, x, 0, key=key, samples=1, method=_noisy_input)
    noisy_bf16 = A.smoothgrad(mlp, x.astype(BF16), 0, key=key, samples=1, method=_noisy_input)
    np.testing.assert_array_equal(np.asarray(noisy_bf16, np.float32),
                                  np.asarray(noisy.astype(BF16), np.float32))

    def square(z):  # per draw: (x - 0) * 2 alpha x, so the mean is 2 x² mean(alpha)
        return (z * z).sum(axis=1, keepdims=True)

    b = jnp.zeros((1, 6))
    gs = A.gradient_shap(square, x, 0, key=key, baselines=b, samples=8)
    gs_bf16 = A.gradient_shap(square, x.astype(BF16), 0, key=key, baselines=b, samples=8)
    assert gs_bf16.dtype == BF16
    assert relative(gs_bf16, gs) < 1e-2


W_INT1 = jnp.asarray(np.random.RandomState(0).randint(-3, 4, (6, 8)), jnp.float32)
W_INT2 = jnp.asarray(np.random.RandomState(1).randint(-3, 4, (8, 3)), jnp.float32)
X_INT = jnp.asarray(np.random.RandomState(2).randint(-2, 3, (4, 6)), jnp.float32)


def rounded(x):
    """A ReLU MLP with bfloat16 logits: exact float32 arithmetic (integer inputs and weights),
    scaled and rounded to bfloat16 once at the end. The same bits in and out of ``jit`` (a
    product in bfloat16 may keep excess precision inside it), so NumPy can check them."""
    return (jax.nn.relu(x @ W_INT1) @ W_INT2 * 0.37).astype(BF16)


def targets(f, x, t):
    """``f(x)[i, t[i]]`` in float64."""
    return np.asarray(f(x), np.float64)[np.arange(len(t)), t]


@pytest.mark.parametrize("method", ["feature_ablation", "occlusion"])
def test_perturbation_drops_are_not_rounded_to_bfloat16(method):
    # one feature per group (window 1): each gets f(x)_t - f(x without it)_t of the bf16 logits,
    # whose difference needs more than bfloat16's 8 bits; it came back in bfloat16
    drops = np.zeros(X_INT.shape)
    for i in range(6):
        drops[:, i] = targets(rounded, X_INT, T) - targets(rounded, X_INT.at[:, i].set(0), T)
    assert not np.array_equal(drops, np.asarray(drops, BF16).astype(np.float64))
    options = {"window": 1} if method == "occlusion" else {}
    ours = getattr(A, method)(rounded, X_INT, T, **options)
    assert ours.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(ours, np.float64), drops, rtol=1e-6)


def test_shapley_sampling_adds_up_to_the_bfloat16_gap():
    # efficiency at float32 x through a bf16 model: the sum of the attributions is the gap of
    # the model's own (bf16) logits, to float32's rounding; the mean of bf16 differences lost it
    baseline = 1.0
    ours = A.shapley_sampling(rounded, X_INT, T, key=jax.random.key(0), samples=8,
                              baseline=baseline)
    assert ours.dtype == jnp.float32
    gap = targets(rounded, X_INT, T) - targets(rounded, jnp.full_like(X_INT, baseline), T)
    np.testing.assert_allclose(np.asarray(ours, np.float64).sum(axis=1), gap,
                               atol=1e-6 * np.abs(gap).max())


@pytest.mark.parametrize("model", [cnn_f32, cnn_bf16])
def test_score_cam_reads_a_clipped_softmax_as_probabilities(model):
    # jnp.clip(softmax(z)) is no softmax to the pattern check: Score-CAM took its softmax again
    # (0.86 of the map's maximum off on a digits CNN); read by value, in the model's dtype
    def clipped(x):
        return jnp.clip(jax.nn.softmax(model(x)), 1e-7, 1)

    t = np.array([0, 1])
    ours = A.score_cam(clipped, IMAGES, t, site="features")
    as_given = A.score_cam(clipped, IMAGES, t, site="features", score="logit")
    np.testing.assert_allclose(np.asarray(ours), np.asarray(as_given), rtol=1e-6)
    if model is cnn_f32:  # bfloat16 rounds the head's probabilities (4% off the logits' map)
        assert relative(ours, A.score_cam(model, IMAGES, t, site="features")) < 1e-5


METHODS = {
    "gradient": lambda f, x: A.gradient(f, x, 0),
    "gradient_x_input": lambda f, x: A.gradient_x_input(f, x, 0),
    "guided_backprop": lambda f, x: A.guided_backprop(f, x, 0),
    "conservative_propagation": lambda f, x: A.conservative_propagation(f, x, 0),
    "integrated_gradients": lambda f, x: A.integrated_gradients(f, x, 0, steps=4),
    "smoothgrad": lambda f, x: A.smoothgrad(f, x, 0, key=jax.random.key(0), samples=2),
    "deeplift": lambda f, x: A.deeplift(f, x, 0),
    "deeplift_shap": lambda f, x: A.deeplift_shap(f, x, 0, baselines=jnp.zeros((2,) + x.shape[1:])),
    "gradient_shap": lambda f, x: A.gradient_shap(f, x, 0, key=jax.random.key(0), samples=2,
                                                  baselines=jnp.zeros((2,) + x.shape[1:])),
    "lrp": lambda f, x: A.lrp(f, x, 0, rules=L.EpsilonPlus()),
    "kernel_shap": lambda f, x: A.kernel_shap(f, x, 0, feature_mask=np.arange(36).reshape(6, 6, 1) // 9),
    "lime": lambda f, x: A.lime(f, x, 0, key=jax.random.key(0), samples=8),
    "occlusion": lambda f, x: A.occlusion(f, x, 0, window=(2, 2)),
    "feature_ablation": lambda f, x: A.feature_ablation(
        f, x, 0, feature_mask=np.arange(36).reshape(6, 6, 1) // 9),
    "shapley_sampling": lambda f, x: A.shapley_sampling(
        f, x, 0, key=jax.random.key(0), samples=2,
        feature_mask=np.arange(36).reshape(6, 6, 1) // 9),
    "grad_cam": lambda f, x: A.grad_cam(f, x, 0, site="features"),
    "grad_cam_plus_plus": lambda f, x: A.grad_cam_plus_plus(f, x, 0, site="features"),
    "guided_grad_cam": lambda f, x: A.guided_grad_cam(f, x, 0, site="features"),
    "score_cam": lambda f, x: A.score_cam(f, x, 0, site="features"),
    "activation_x_gradient": lambda f, x: A.activation_x_gradient(f, x, 0, site="features"),
    "layer_conductance": lambda f, x: A.layer_conductance(f, x, 0, site="features", steps=4),
    "layer_integrated_gradients": lambda f, x: A.layer_integrated_gradients(
        f, x, 0, site="features", steps=4),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_attributions_come_back_in_the_input_dtype(name):
    # a bfloat16 model explained at float32 x, and a float32 model at bfloat16 x
    for f, x in ((cnn_bf16, IMAGES), (cnn_f32, IMAGES.astype(BF16))):
        out = METHODS[name](f, x)
        assert out.dtype == x.dtype, (f.__name__, out.dtype)
        assert np.isfinite(np.asarray(out, np.float32)).all()


def test_integer_inputs_are_refused_with_advice_that_fits_them():
    pixels = jnp.zeros((2, 8, 8, 1), jnp.uint8)
    with pytest.raises(TypeError, match=r"astype\(jnp.float32\) / 255") as image:
        A.gradient(lambda x: x.reshape(2, -1) @ jnp.ones((64, 3)), pixels, 0)
    assert "token" not in str(image.value)
    with pytest.raises(TypeError, match="token ids"):
        A.gradient(lambda x: x @ jnp.ones((5, 3)), jnp.zeros((2, 5), jnp.int32), 0)
