"""Grad-CAM++ and Score-CAM: float64 NumPy transcriptions of the papers' formulas, their
defining properties on planted models, and channels-first twins.

The references take the site's value from ``jaxplain.capture`` and the target's gradient there
from ``jax.grad`` of ``jaxplain.intervene``; everything after that (the coefficients, the
masks, their bilinear upsampling, the softmaxes, the combination) is NumPy in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution as A
from jaxplain.attribution import _cam
from tests.attribution import twins
from tests.attribution.test_registry import _rows  # a (n, 8, 16) site of images
from tests.core.test_channels import XF, EqxNet, nchw, nhwc
from tests.core.test_channels import X as X_TWIN

F = twins.cnn(twins.cnn_params(3))
X = twins.inputs(7, (3, 8, 8, 2), "nonneg")
T = np.array([0, 2, 4])
TOL = 1e-5  # float32 against float64, relative to the largest value of the map


def assert_close(ours, reference, tol=TOL):
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape
    scale = max(np.abs(reference).max(), 1e-12)
    error = np.abs(ours - reference).max() / scale
    assert error <= tol, error
    return error


def value_and_gradient(f, x, t, site):
    """The site's value and ``d sum_i f(x)[i, t_i] / d value``, as float64 NumPy arrays."""
    a = jp.capture(f, [site])(x)[1][site]

    def total(d):
        logits = jp.intervene(f, {site: lambda v: v + d})(x)
        return jnp.take_along_axis(logits, jnp.asarray(t)[:, None], axis=1).sum()

    g = jax.grad(total)(jnp.zeros_like(a))
    return np.asarray(a, np.float64), np.asarray(g, np.float64)


def resize(m, size):
    """Bilinear resize of ``(n, h, w)`` maps to ``(n, *size)`` with half-pixel centres (output
    pixel ``i`` reads input position ``(i + 1/2) h / H - 1/2``, clamped to the edges)."""
    for axis, large in enumerate(size, start=1):
        small = m.shape[axis]
        src = np.clip((np.arange(large) + 0.5) * small / large - 0.5, 0, small - 1)
        low = np.floor(src).astype(int)
        high = np.minimum(low + 1, small - 1)
        shape = [1] * m.ndim
        shape[axis] = large
        frac = (src - low).reshape(shape)
        m = np.take(m, low, axis=axis) * (1 - frac) + np.take(m, high, axis=axis) * frac
    return m


def softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def reference_grad_cam_plus_plus(a, g, relu=True):
    """The paper's alpha (exponential output), channel weights and map, one example and one
    channel at a time."""
    n, channels = a.shape[0], a.shape[-1]
    cam = np.zeros(a.shape[:-1])
    for i in range(n):
        for c in range(channels):
            ai, gi = a[i, ..., c], g[i, ..., c]
            numerator = gi ** 2
            denominator = 2 * gi ** 2 + ai.sum() * gi ** 3
            alpha = np.zeros_like(gi)
            np.divide(numerator, denominator, out=alpha, where=denominator != 0)
            cam[i] += (alpha * np.maximum(gi, 0)).sum() * ai
    return np.maximum(cam, 0) if relu else cam


def reference_score_cam(f, x, t, a, baseline=0.0, score="probability", normalize=None,
                        relu=True):
    """Score-CAM one channel at a time: upsample, min-max normalize, blend, the target's
    softmax probability (or logit), increase over the baseline, weights, map."""
    x = np.asarray(x, np.float64)
    b = np.broadcast_to(np.asarray(baseline, np.float64), x.shape)
    rows = np.arange(x.shape[0])

    def probability(z):
        logits = np.asarray(f(jnp.asarray(z, jnp.float32)), np.float64)
        return (softmax(logits) if score == "probability" else logits)[rows, t]

    p_b = probability(b)
    scores = np.zeros((a.shape[0], a.shape[-1]))
    for c in range(a.shape[-1]):
        m = resize(a[..., c], x.shape[1:3])
        low = m.min(axis=(1, 2), keepdims=True)
        span = m.max(axis=(1, 2), keepdims=True) - low
        m = np.where(span > 0, (m - low) / np.where(span > 0, span, 1), 0)
        scores[:, c] = probability(b + m[..., None] * (x - b)) - p_b
    w = softmax(scores) if normalize == "softmax" else scores
    cam = np.einsum("nhwc,nc->nhw", a, w)
    return np.maximum(cam, 0) if relu else cam


@pytest.mark.parametrize("site", ["relu", "conv_1", "relu_1"])
def test_grad_cam_plus_plus_is_the_formula(site):
    a, g = value_and_gradient(F, X, T, site)
    for relu in (True, False):
        want = reference_grad_cam_plus_plus(a, g, relu)
        assert_close(A.grad_cam_plus_plus(F, X, T, site=site, relu=relu, resize=False), want)
    up = A.grad_cam_plus_plus(F, X, T, site=site)
    assert up.shape == (3, 8, 8, 1)
    assert_close(up[..., 0], resize(reference_grad_cam_plus_plus(a, g), (8, 8)))


@pytest.mark.parametrize("site", ["relu", "relu_1"])
@pytest.mark.parametrize("score, normalize, baseline", [
    ("probability", None, 0.0), ("probability", None, 0.3), ("logit", "softmax", 0.0),
    ("probability", "softmax", 0.3), ("logit", None, 0.3)])
def test_score_cam_is_the_formula(site, score, normalize, baseline):
    a, _ = value_and_gradient(F, X, T, site)
    options = dict(site=site, score=score, normalize=normalize, baseline=baseline)
    want = reference_score_cam(F, X, T, a, baseline, score, normalize)
    assert_close(A.score_cam(F, X, T, resize=False, **options), want)
    up = A.score_cam(F, X, T, batch_size=4, **options)
    assert up.shape == (3, 8, 8, 1)
    assert_close(up[..., 0], resize(want, (8, 8)))
    raw = reference_score_cam(F, X, T, a, baseline, score, normalize, relu=False)
    assert_close(A.score_cam(F, X, T, relu=False, resize=False, **options), raw)


def _pooled_head(channels, classes, seed):
    """``relu(conv3x3(x))`` at site "features", global average pooled, then dense: the target's
    gradient at the site is ``wd[c, t] / N`` at every one of the N positions of channel c."""
    rng = np.random.default_rng(seed)
    w1 = jnp.asarray(rng.normal(size=(3, 3, 1, channels)) * 0.5, jnp.float32)
    wd = rng.normal(size=(channels, classes)).astype(np.float32)

    def f(x):
        with jax.named_scope("features"):
            h = jax.nn.relu(jax.lax.conv_general_dilated(
                x, w1, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
        return h.mean(axis=(1, 2)) @ jnp.asarray(wd)

    return f, wd


def test_grad_cam_plus_plus_closed_form_on_a_pooled_head():
    """A uniform gradient ``g_c = v_c / N`` gives ``alpha = 1 / (2 + v_c m_c)`` (``m_c`` the
    channel's mean) and ``w_c = N alpha relu(g_c) = relu(v_c) / (2 + v_c m_c)``: Grad-CAM's
    weight ``g_c`` rescaled by ``N / (2 + v_c m_c)`` where ``v_c > 0``, zero where ``v_c < 0``."""
    f, wd = _pooled_head(5, 4, seed=0)
    x = twins.inputs(3, (4, 6, 6, 1), "signed")
    t = np.array([0, 1, 2, 3])
    a = np.asarray(jp.capture(f, ["features"])(x)[1]["features"], np.float64)
    v = wd.astype(np.float64)[:, t].T                              # (n, c)
    m = a.mean(axis=(1, 2))
    w = np.maximum(v, 0) / (2 + v * m)
    assert (v < 0).any() and (v > 0).any()
    want = np.maximum(np.einsum("nhwc,nc->nhw", a, w), 0)
    assert_close(A.grad_cam_plus_plus(f, x, t, site="features", resize=False), want)
    # Grad-CAM weights the negative channels negatively: the two maps differ
    grad_cam = np.maximum(np.einsum("nhwc,nc->nhw", a, v / 36), 0)
    assert_close(A.grad_cam(f, x, t, site="features", resize=False), grad_cam)
    assert np.abs(want / want.max() - grad_cam / grad_cam.max()).max() > 0.1


def test_grad_cam_plus_plus_of_one_positive_channel_is_grad_cam_rescaled():
    f, wd = _pooled_head(1, 3, seed=1)
    x = twins.inputs(4, (3, 6, 6, 1), "signed")
    t = np.array([0, 1, 2])
    ours = np.asarray(A.grad_cam_plus_plus(f, x, t, site="features", resize=False), np.float64)
    grad_cam = np.asarray(A.grad_cam(f, x, t, site="features", resize=False), np.float64)
    a = np.asarray(jp.capture(f, ["features"])(x)[1]["features"], np.float64)[..., 0]
    v = wd[0, t].astype(np.float64)
    factor = 36 / (2 + v * a.mean(axis=(1, 2)))                   # N / (2 + v m)
    for i in range(3):
        if v[i] > 0:
            assert factor[i] > 0 and grad_cam[i].max() > 0
            assert_close(ours[i], factor[i] * grad_cam[i])
        else:
            assert not ours[i].any()


def test_a_zero_denominator_gives_alpha_zero_not_nan():
    """``2 g² + S g³ = 0`` exactly: channel 0 has mean 2 and gradient -1/4 at its 4 positions
    (S g = -2); channel 1 has zero gradient (0/0)."""
    def f(x):  # (n, 2, 2, 1)
        with jax.named_scope("features"):
            h = jnp.concatenate([x, x], axis=-1)
        return h.mean(axis=(1, 2)) @ jnp.array([[-1.0, 1.0], [0.0, 0.0]])

    x = jnp.array([0.0, 1.0, 3.0, 4.0]).reshape(1, 2, 2, 1)
    for t in (0, 1):
        cam = A.grad_cam_plus_plus(f, x, t, site="features", relu=False, resize=False)
        assert np.isfinite(np.asarray(cam)).all()
    assert not np.asarray(A.grad_cam_plus_plus(f, x, 0, site="features", relu=False,
                                               resize=False)).any()
    # class 1: g = 1/4, S = 8: alpha = 1/4, w = 4 * 1/4 * 1/4
    np.testing.assert_allclose(A.grad_cam_plus_plus(f, x, 1, site="features", resize=False),
                               0.25 * x[..., 0])
    a, g = (jnp.asarray(v) for v in value_and_gradient(f, x, np.array([0]), "features"))
    assert np.asarray(2 * g[..., 0] ** 2 + a[..., 0].sum() * g[..., 0] ** 3).max() == 0
    assert jnp.isfinite(jax.grad(lambda z: A.grad_cam_plus_plus(
        f, z, 0, site="features", relu=False, resize=False).sum())(x)).all()


LEFT = (np.arange(4) < 2).astype(np.float32)[None, :, None]  # the left half of a 4x4 site


def _planted(x):
    """Channel 0 fires on the left half only, channel 1 on the right half, channel 2 never;
    class 0 reads the left half of the image, class 1 is constant."""
    pooled = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4
    with jax.named_scope("features"):
        h = jnp.concatenate([pooled * LEFT, pooled * (1 - LEFT), 0 * pooled], axis=-1)
    left = x[:, :, :4].mean(axis=(1, 2, 3))
    return jnp.stack([3 * left + 0 * h.sum(axis=(1, 2, 3)), 2 * jnp.ones_like(left)], axis=1)


@pytest.mark.parametrize("baseline", [0.0, 0.3])
def test_score_cam_finds_the_planted_channel(baseline):
    x = jnp.asarray(twins.inputs(5, (4, 8, 8, 1), "nonneg") * 0.5 + 0.5)
    t = np.zeros(4, np.int32)
    a = jp.capture(_planted, ["features"])(x)[1]["features"]
    b = jnp.full_like(x, baseline)
    p, p_b = _cam.channel_scores(_planted, x, jnp.asarray(t), b, a, score="probability",
                                 batch_size=None, channels=3)
    increase = np.asarray(p - p_b[:, None])
    assert (increase.argmax(axis=1) == 0).all()
    assert (increase[:, 0] > 0.1).all() and (increase[:, 0] > 5 * increase[:, 1]).all()
    # the dead channel masks the whole input to the baseline: exactly the baseline's score
    np.testing.assert_allclose(p[:, 2], p_b, rtol=1e-6)
    np.testing.assert_allclose(p_b, softmax(np.asarray(_planted(b), np.float64))[:, 0], rtol=1e-6)
    for score, normalize, ratio in (("probability", None, 2), ("logit", "softmax", 2),
                                    ("logit", None, 2), ("probability", "softmax", 1.2)):
        cam = np.asarray(A.score_cam(_planted, x, t, site="features", baseline=baseline,
                                     score=score, normalize=normalize))[..., 0]
        left, right = cam[:, :, :4].mean(axis=(1, 2)), cam[:, :, 4:].mean(axis=(1, 2))
        assert (left > ratio * right).all(), (score, normalize, left, right)
        assert (cam.reshape(4, -1).argmax(axis=1) % 8 < 4).all()


def test_a_probability_head_is_read_as_it_is():
    """A model that outputs softmax probabilities gets the same map as its logits twin (no
    second softmax)."""
    x = jnp.asarray(twins.inputs(5, (4, 8, 8, 1), "nonneg") * 0.5 + 0.5)
    probabilities = lambda z: jax.nn.softmax(_planted(z), axis=-1)
    want = A.score_cam(_planted, x, 0, site="features")
    assert_close(A.score_cam(probabilities, x, 0, site="features"), want, 1e-5)


def test_a_softmax_of_probabilities_is_nearly_class_blind():
    """Why it is not the default: increases in [-1, 1] give softmax weights within e² of each
    other, so the planted map keeps much of the channel that class 0 never reads."""
    x = jnp.asarray(twins.inputs(5, (4, 8, 8, 1), "nonneg") * 0.5 + 0.5)
    cams = {normalize: np.asarray(A.score_cam(_planted, x, 0, site="features",
                                              normalize=normalize, resize=False))
            for normalize in (None, "softmax")}
    share = {k: v[:, :, 2:].sum() / v.sum() for k, v in cams.items()}  # the right half's share
    assert share["softmax"] > 0.3 and share[None] < 0.1, share


def test_score_cam_chunks_are_any_size():
    whole = A.score_cam(F, X, T, site="relu_1")
    for batch_size in (1, 4, 5, 6, 50):  # 6 channels: remainders, one chunk, more than all
        assert_close(A.score_cam(F, X, T, site="relu_1", batch_size=batch_size), whole, 1e-6)


@pytest.mark.parametrize("method, options", [(A.grad_cam_plus_plus, {}),
                                             (A.score_cam, {"batch_size": 3}),
                                             (A.score_cam, {"normalize": None, "baseline": 0.2})])
def test_channels_first_twins_give_the_nhwc_map_moved(method, options):
    t = jnp.argmax(nhwc(X_TWIN), -1)
    for site in ("conv1", "relu_1"):
        want = method(nhwc, X_TWIN, t, site=site, **options)
        assert np.abs(np.asarray(want)).max() > 0
        for f in (nchw, jp.as_function(EqxNet())):
            got = method(f, XF, t, site=site, **options)
            assert got.shape == (5, 1, 8, 8)
            np.testing.assert_allclose(got, jnp.moveaxis(want, -1, 1), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(method(nchw, XF, t, site=site, resize=False, **options),
                                   method(nhwc, X_TWIN, t, site=site, resize=False, **options),
                                   rtol=1e-4, atol=1e-5)


def test_channels_first_score_cam_upsamples_a_smaller_site():
    """An NCHW twin of the pooled CNN: masks from its 4x4 site broadcast over axis 1."""
    params = twins.cnn_params(3)
    f_first = twins.cnn(params, layout="NCHW")
    x_first = jnp.moveaxis(X, -1, 1)
    for method in (A.score_cam, A.grad_cam_plus_plus):
        want = method(F, X, T, site="relu_1")
        got = method(f_first, x_first, T, site="relu_1")
        np.testing.assert_allclose(got, jnp.moveaxis(want, -1, 1), rtol=1e-4, atol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="score must be one of"):
        A.score_cam(F, X, T, site="relu_1", score="log_probability")
    with pytest.raises(ValueError, match="normalize must be one of"):
        A.score_cam(F, X, T, site="relu_1", normalize="sum")
    # Score-CAM's masks are the site's upsampled channels: resize=False cannot help, and the
    # message says so rather than blaming the resize
    for resize in (True, False):
        with pytest.raises(ValueError, match=r"score_cam masks the input with each of the "
                           r"site's channels upsampled.*spatial site with the input's layout.*"
                           r"as many axes as x \(3, 8, 8, 2\); got site 'rows' of shape "
                           r"\(3, 8, 16\)") as error:
            A.score_cam(_rows, X, T, site="rows", resize=resize)
        assert ("resize=False only keeps" in str(error.value)) is not resize
        assert "to resize its map" not in str(error.value)
    with pytest.raises(ValueError, match="pass resize=False"):
        A.grad_cam_plus_plus(_rows, X, T, site="rows")
    assert A.grad_cam_plus_plus(_rows, X, T, site="rows", resize=False).shape == (3, 8)
    with pytest.raises(ValueError, match="spatial axes"):
        A.score_cam(F, X, T, site="linear")
    with pytest.raises(ValueError, match="batch_size"):
        A.score_cam(F, X, T, site="relu_1", batch_size=0)
    with pytest.raises(ValueError, match="baseline"):
        A.score_cam(F, X, T, site="relu_1", baseline=np.zeros((2, 8, 8, 2), np.float32))
    with pytest.raises(TypeError, match="site must be one site name"):
        A.grad_cam_plus_plus(F, X, T, site=["relu_1"])


def test_score_cam_reads_a_sigmoid_as_it_is_and_refuses_a_softmax_of_one_output():
    x = jnp.asarray(twins.inputs(5, (4, 8, 8, 1), "nonneg") * 0.5 + 0.5)
    t = np.zeros(4, np.int32)
    labels = lambda x: jax.nn.sigmoid(_planted(x))
    as_given = A.score_cam(labels, x, t, site="features")                 # score="probability"
    np.testing.assert_allclose(as_given, A.score_cam(labels, x, t, site="features", score="logit"))
    one = lambda x: _planted(x)[:, :1]
    with pytest.raises(ValueError, match="one output, whose softmax is always 1.*score='logit'"):
        A.score_cam(one, x, t, site="features")
    cam = np.asarray(A.score_cam(one, x, t, site="features", score="logit"))[..., 0]
    assert (cam[:, :, :4].mean(axis=(1, 2)) > 2 * cam[:, :, 4:].mean(axis=(1, 2))).all()
