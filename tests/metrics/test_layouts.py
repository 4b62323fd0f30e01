"""What the perturbation metrics rank and replace as one feature, read off the model's first
convolution: a pixel, time step or voxel with all its channels; every element of a channel-less
volume; NHWC pixels for a 4-d batch and a model without convolutions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from jaxplain import metrics
from jaxplain.metrics import _perturb
from tests.metrics._models import grad

_DIMS = {1: ("NWC", "WIO", "NWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}
_FIRST = {1: ("NCW", "OIW", "NCW")}


def _conv_net(spatial, c_in, seed=0, classes=3, channels_first=False):
    """A SAME convolution over `spatial` axes (c_in -> 4 channels), ReLU, a mean over the grid
    and a dense head; channels last, or first (``channels_first``, 1-d only)."""
    rng = np.random.default_rng(seed)
    k = jnp.asarray(rng.normal(size=(3,) * spatial + (c_in, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(4, classes)), jnp.float32)
    if channels_first:
        k = jnp.moveaxis(k, (-2, -1), (1, 0))            # (O, I, W)

    def f(x):
        dims = _FIRST[spatial] if channels_first else _DIMS[spatial]
        h = jax.lax.conv_general_dilated(x, k, (1,) * spatial, "SAME", dimension_numbers=dims)
        h = jax.nn.relu(h)
        return h.mean(axis=tuple(range(2, 2 + spatial)) if channels_first
                      else tuple(range(1, 1 + spatial))) @ w

    return f


def _volume_models():
    """One 3-d model spelled two ways: on channel-less volumes ``(n, D, H, W)`` (it adds the
    channel axis itself) and on ``(n, D, H, W, 1)``."""
    g = _conv_net(3, 1)
    return (lambda v: g(v[..., None])), g


def _hand_curve(f, x, t, a, steps, channels, base, insert=False):
    """Deletion (insertion) logits by hand: features ranked by attribution (summed over the
    last axis with `channels`), most relevant first, set to `base` (put back from `x`)."""
    x, a, base = (np.asarray(v, np.float64) for v in (x, a, base))
    out = []
    for i in range(len(x)):
        score = (a[i].sum(-1) if channels else a[i]).ravel()
        order, n = np.argsort(-score, kind="stable"), score.size
        row = []
        for k in range(steps + 1):
            chosen = np.zeros(n, bool)
            chosen[order[: k * n // steps]] = True
            chosen = chosen.reshape(x.shape[1:-1] if channels else x.shape[1:])
            chosen = chosen[..., None] if channels else chosen
            xi = np.where(chosen, x[i], base[i]) if insert else np.where(chosen, base[i], x[i])
            row.append(float(f(jnp.asarray(xi[None], jnp.float32))[0, t[i]]))
        out.append(row)
    return np.asarray(out)


def test_a_channel_less_volume_ranks_every_voxel_as_its_spelling_with_a_channel_axis():
    f4, f5 = _volume_models()
    x = jax.random.normal(jax.random.key(0), (2, 5, 5, 5))
    t = jnp.array([0, 2])
    a = grad(f4, x, t) * x
    x5, a5 = x[..., None], a[..., None]
    d4 = metrics.deletion(f4, x, t, a, steps=4, output="logit").values
    d5 = metrics.deletion(f5, x5, t, a5, steps=4, output="logit").values
    np.testing.assert_allclose(d4, d5, rtol=1e-6, atol=1e-6)
    hand = _hand_curve(f4, x, t, a, 4, False, np.zeros(x.shape))
    np.testing.assert_allclose(d4, hand, rtol=1e-5, atol=1e-5)
    # insertion starts from zeros (no 2-d blur of each D x H slice), as for the 5-d spelling
    i4 = metrics.insertion(f4, x, t, a, steps=4, output="logit").values
    np.testing.assert_allclose(i4[:, 0], f4(jnp.zeros_like(x))[jnp.arange(2), t], atol=1e-6)
    np.testing.assert_allclose(
        i4, metrics.insertion(f5, x5, t, a5, steps=4, output="logit").values, atol=1e-6)
    np.testing.assert_allclose(metrics.pixel_perturbation(f4, x, a, target=t),
                               metrics.pixel_perturbation(f5, x5, a5, target=t), atol=1e-6)


def test_the_other_perturbation_metrics_read_a_channel_less_volume_as_its_5d_spelling():
    f4, f5 = _volume_models()
    x = jax.random.normal(jax.random.key(1), (2, 4, 4, 4))
    t = jnp.array([1, 0])
    a = grad(f4, x, t) * x
    x5, a5, key = x[..., None], a[..., None], jax.random.key(2)
    pairs = [
        lambda f, x, a: metrics.monotonicity(f, x, t, a, steps=8, baseline="mean",
                                             output="logit"),
        lambda f, x, a: metrics.faithfulness_correlation(f, x, t, a, key=key, subset_size=6,
                                                         samples=5, baseline="mean"),
        lambda f, x, a: metrics.monotonicity_correlation(f, x, t, a, key=key, samples=2,
                                                         steps=4),
        lambda f, x, a: metrics.irof(f, x, t, a, jnp.arange(64).reshape(4, 4, 4) // 16,
                                     output="logit"),
    ]
    for run in pairs:
        np.testing.assert_allclose(run(f4, x, a), run(f5, x5, a5), rtol=1e-5, atol=1e-6)


def test_a_channel_less_volume_is_no_image_for_ssim():
    f4, _ = _volume_models()
    x = jax.random.normal(jax.random.key(3), (2, 5, 5, 5))
    with pytest.raises(ValueError, match='similarity="ssim" compares 2-D maps'):
        metrics.random_logit(f4, x, 0, grad, key=jax.random.key(0))


@pytest.mark.parametrize("spatial, shape", [(1, (2, 12, 3)), (3, (2, 3, 4, 3, 2))])
def test_a_signal_or_volume_with_channels_moves_each_position_with_all_its_channels(spatial,
                                                                                      shape):
    f = _conv_net(spatial, shape[-1])
    x = jax.random.normal(jax.random.key(4), shape).at[..., 1].add(10.0)  # a channel offset
    t = jnp.array([0, 2])
    a = jax.random.normal(jax.random.key(5), shape)
    got = metrics.deletion(f, x, t, a, steps=5, output="logit").values
    np.testing.assert_allclose(got, _hand_curve(f, x, t, a, 5, True, np.zeros(shape)),
                               rtol=1e-5, atol=1e-4)
    # "mean": each example's mean per channel, not one mean over all its elements
    means = np.broadcast_to(np.asarray(x).mean(axis=tuple(range(1, x.ndim - 1)), keepdims=True),
                            shape)
    got = metrics.insertion(f, x, t, a, steps=5, baseline="mean", output="logit").values
    np.testing.assert_allclose(got, _hand_curve(f, x, t, a, 5, True, means, insert=True),
                               rtol=1e-5, atol=1e-4)
    # a map summed over the channels ranks the positions alike
    summed = a.sum(-1, keepdims=True)
    np.testing.assert_array_equal(metrics.pixel_perturbation(f, x, summed, target=t),
                                  metrics.pixel_perturbation(f, x, a, target=t))


def test_a_channels_first_signal_scores_as_its_channels_last_twin():
    ncw = _conv_net(1, 3, channels_first=True)
    nwc = _conv_net(1, 3)
    x = jax.random.normal(jax.random.key(6), (2, 10, 3))
    a = jax.random.normal(jax.random.key(7), x.shape)
    xc, ac = jnp.moveaxis(x, -1, 1), jnp.moveaxis(a, -1, 1)
    np.testing.assert_allclose(ncw(xc), nwc(x), rtol=1e-5, atol=1e-5)
    for run in (lambda f, x, a: metrics.deletion(f, x, 1, a, steps=5, baseline="mean").values,
                lambda f, x, a: metrics.insertion(f, x, 1, a, steps=5, baseline="blur").values):
        np.testing.assert_allclose(run(ncw, xc, ac), run(nwc, x, a), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape, channels", [((2, 9, 2), True), ((2, 4, 5, 6), False)])
def test_blur_smooths_along_every_axis_but_the_channels(shape, channels):
    x = jax.random.uniform(jax.random.key(8), shape)
    sigma = (0,) + (1.0,) * (len(shape) - 1 - channels) + (0,) * channels
    want = scipy.ndimage.gaussian_filter(np.asarray(x, np.float64), sigma=sigma, mode="nearest",
                                         truncate=3.0)
    np.testing.assert_allclose(_perturb.blur(x, 1.0, channels), want, atol=1e-5)


def test_a_model_without_convolutions_keeps_nhwc_pixels_and_elements_elsewhere():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(32, 3)), jnp.float32)
    f = lambda x: x.reshape(len(x), -1) @ w                 # an MLP on 32 inputs
    t = jnp.array([0, 1])
    image = jax.random.normal(jax.random.key(9), (2, 4, 4, 2))
    a = grad(f, image, t) * image
    got = metrics.deletion(f, image, t, a, steps=4, output="logit").values
    np.testing.assert_allclose(got, _hand_curve(f, image, t, a, 4, True, np.zeros(image.shape)),
                               rtol=1e-5, atol=1e-5)
    tokens = image.reshape(2, 16, 2)                        # (n, T, C): element by element
    b = a.reshape(tokens.shape)
    got = metrics.deletion(f, tokens, t, b, steps=4, output="logit").values
    np.testing.assert_allclose(got, _hand_curve(f, tokens, t, b, 4, False, np.zeros(tokens.shape)),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="needs inputs that a convolution reads"):
        metrics.insertion(f, tokens, t, b, baseline="blur")


def test_a_second_call_traces_nothing_and_compiles_nothing():
    traced = []
    ncw = _conv_net(1, 2, channels_first=True)

    def f(x):
        traced.append(x.shape)
        return ncw(x)

    x = jax.random.normal(jax.random.key(10), (2, 2, 8))
    a = jax.random.normal(jax.random.key(11), x.shape)
    from jaxplain.metrics import _faithfulness

    first = metrics.deletion(f, x, 0, a, steps=4)
    seen, cached = len(traced), _faithfulness._curve._cache_size()
    metrics.deletion(f, x + 1.0, 0, a * 2.0, steps=4)
    assert len(traced) == seen and _faithfulness._curve._cache_size() == cached
    jitted = jax.jit(lambda x, a: metrics.deletion(f, x, 0, a, steps=4).values)(x, a)
    np.testing.assert_allclose(jitted, first.values, rtol=1e-6)


def test_the_documented_workaround_removes_whole_time_steps_where_no_convolution_reads_x():
    # docs/metrics.md: a channel-summed map and steps that divide T remove whole time steps
    rng = np.random.default_rng(1)
    w = jnp.asarray(rng.normal(size=(24, 2)), jnp.float32)
    f = lambda x: x.reshape(len(x), -1) @ w                 # no convolution: elements
    x = jax.random.normal(jax.random.key(12), (2, 8, 3))
    t = jnp.array([0, 1])
    a = jax.random.normal(jax.random.key(13), x.shape)
    summed = a.sum(-1, keepdims=True)
    means = x.mean(1, keepdims=True)
    got = metrics.deletion(f, x, t, summed, steps=4, baseline=means, output="logit").values
    want = _hand_curve(f, x, t, a, 4, True, np.broadcast_to(means, x.shape))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
