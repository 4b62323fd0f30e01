"""Channels-first models: their sites are presented channels-last, so that every per-channel
method gives the same answer as on the same network written NHWC."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain.attribution import grad_cam
from jaxplain.core._capture import program_of
from jaxplain.core._channels import input_channel_axis

_K = jax.random.split(jax.random.key(0), 6)
W1 = jax.random.normal(_K[0], (3, 3, 2, 4)) * 0.5   # HWIO
W2 = jax.random.normal(_K[1], (3, 3, 4, 4)) * 0.3
B1 = jax.random.normal(_K[2], (4,)) * 0.1
B2 = jax.random.normal(_K[3], (4,)) * 0.1
D = jax.random.normal(_K[4], (4, 3))
X = jax.random.normal(_K[5], (5, 8, 8, 2))           # NHWC


def _conv(x, w, layout):
    kernel = "HWIO" if layout == "NHWC" else "OIHW"
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=(layout, kernel, layout))


def nhwc(x):
    with jax.named_scope("conv1"):
        h = _conv(x, W1, "NHWC") + B1
    h = jax.nn.relu(h)
    with jax.named_scope("conv2"):
        g = _conv(h, W2, "NHWC") + B2
    h = jax.nn.relu(g + h)
    return h.mean(axis=(1, 2)) @ D


def nchw(x):
    with jax.named_scope("conv1"):
        h = _conv(x, W1.transpose(3, 2, 0, 1), "NCHW") + B1[None, :, None, None]
    h = jax.nn.relu(h)
    with jax.named_scope("conv2"):
        g = _conv(h, W2.transpose(3, 2, 0, 1), "NCHW") + B2[None, :, None, None]
    h = jax.nn.relu(g + h)
    return h.mean(axis=(2, 3)) @ D


XF = jnp.moveaxis(X, -1, 1)                           # the same images, NCHW


def test_the_twins_compute_the_same_function():
    np.testing.assert_allclose(nchw(XF), nhwc(X), rtol=1e-5, atol=1e-5)


def test_sites_of_a_channels_first_model_are_presented_channels_last():
    last, first = jp.sites(nhwc, X), jp.sites(nchw, XF)
    assert [(s.name, s.shape, s.kind) for s in first] == [(s.name, s.shape, s.kind) for s in last]
    assert [s.channel_axis for s in last] == [-1] * len(last)
    assert [s.channel_axis for s in first][:-1] == [1] * (len(first) - 1)  # the conv sites
    assert first[-1].shape == (5, 3) and first[-1].channel_axis == -1      # the logits


def test_capture_returns_the_nhwc_values():
    names = [s.name for s in jp.sites(nhwc, X)]
    _, want = jp.capture(nhwc, names)(X)
    _, got = jp.capture(nchw, names)(XF)
    for name in names:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_intervene_edits_channels_on_the_last_axis():
    mask = jnp.array([1.0, 0.0, 1.0, 0.0])
    seen = []

    def edit(v):
        seen.append(v.shape)
        return v * mask

    want = jp.intervene(nhwc, {"relu": lambda v: v * mask})(X)
    got = jp.intervene(nchw, {"relu": edit})(XF)
    assert seen[0] == (5, 8, 8, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"returned shape \(5, 4, 8, 8\); expected \(5, 8, 8, 4\)"):
        jp.intervene(nchw, {"relu": lambda v: jnp.moveaxis(v, -1, 1)})(XF)


def test_grad_cam_of_the_nchw_twin_is_the_nhwc_map_moved():
    t = jnp.argmax(nhwc(X), -1)
    for site in ("conv1", "conv2", "relu_1"):
        want = grad_cam(nhwc, X, t, site=site)
        got = grad_cam(nchw, XF, t, site=site)
        assert got.shape == (5, 1, 8, 8)
        np.testing.assert_allclose(got, jnp.moveaxis(want, -1, 1), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(grad_cam(nchw, XF, t, site=site, resize=False),
                                   grad_cam(nhwc, X, t, site=site, resize=False),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rule", ["Epsilon", "ZPlus", "EpsilonPlusFlat", "EpsilonAlpha2Beta1", "Gamma"])
def test_lrp_rules_fold_biases_and_pool_means_on_the_channel_axis(rule):
    from jaxplain import lrp as rules
    from jaxplain.attribution import lrp
    t = jnp.array([0, 1, 2, 0, 1])
    want = lrp(nhwc, X, t, rules=getattr(rules, rule)())
    for f in (nchw, jp.as_function(EqxNet())):
        got = lrp(f, XF, t, rules=getattr(rules, rule)())
        np.testing.assert_allclose(jnp.moveaxis(got, 1, -1), want, rtol=1e-4, atol=1e-6)


def test_filter_binarization_agrees_across_layouts():
    want = jp.rules.activations(nhwc, X, ["conv1", "relu_1"], conv_quantile=0.5)
    got = jp.rules.activations(nchw, XF, ["conv1", "relu_1"], conv_quantile=0.5)
    for name in ("conv1", "relu_1"):
        np.testing.assert_array_equal(got[name].items, want[name].items)
        assert got[name].shape == (4,)


@pytest.mark.filterwarnings("ignore:f predicts class:UserWarning")  # the layouts are compared, not the region
def test_neurochains_scores_filters_in_both_layouts():
    region = jnp.concatenate([X, X[::-1] * 0.5])
    options = dict(sites=["conv1", "conv2"], key=jax.random.key(1), l1=3e-3, steps=150,
                   finetune_steps=20)
    want = jp.subnet.extract(nhwc, region, **options)
    got = jp.subnet.extract(nchw, jnp.moveaxis(region, -1, 1), **options)
    for name in ("conv1", "conv2"):
        assert got.masks[name].shape == (4,)
        np.testing.assert_array_equal(got.masks[name], want.masks[name])
    np.testing.assert_allclose(jp.subnet.apply(nchw, got)(XF), jp.subnet.apply(nhwc, want)(X),
                               rtol=1e-4, atol=1e-4)


class EqxNet(eqx.Module):
    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d

    def __init__(self):
        self.conv1 = eqx.nn.Conv2d(2, 4, 3, padding=1, key=jax.random.key(0))
        self.conv2 = eqx.nn.Conv2d(4, 4, 3, padding=1, key=jax.random.key(0))
        self.conv1 = eqx.tree_at(lambda c: (c.weight, c.bias), self.conv1,
                                 (W1.transpose(3, 2, 0, 1), B1[:, None, None]))
        self.conv2 = eqx.tree_at(lambda c: (c.weight, c.bias), self.conv2,
                                 (W2.transpose(3, 2, 0, 1), B2[:, None, None]))

    def __call__(self, x):  # one (2, 8, 8) image
        h = jax.nn.relu(self.conv1(x))
        h = jax.nn.relu(self.conv2(h) + h)
        return h.mean(axis=(1, 2)) @ D


def test_an_equinox_convolutional_model_is_seen_as_its_nhwc_twin():
    f = jp.as_function(EqxNet())
    np.testing.assert_allclose(f(XF), nhwc(X), rtol=1e-5, atol=1e-5)
    by_name = {s.name: s for s in jp.sites(f, XF)}
    assert by_name["conv1"].shape == (5, 8, 8, 4) and by_name["conv1"].channel_axis == 1
    _, want = jp.capture(nhwc, ["conv1", "relu_1"])(X)
    _, got = jp.capture(f, ["conv1", "relu_1"])(XF)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)
    t = jnp.argmax(nhwc(X), -1)
    np.testing.assert_allclose(grad_cam(f, XF, t, site="relu_1"),
                               jnp.moveaxis(grad_cam(nhwc, X, t, site="relu_1"), -1, 1),
                               rtol=1e-4, atol=1e-5)


class EqxPools(eqx.Module):
    conv1: eqx.nn.Conv2d

    def __init__(self):
        self.conv1 = eqx.tree_at(lambda c: (c.weight, c.bias),
                                 eqx.nn.Conv2d(2, 4, 3, padding=1, key=jax.random.key(0)),
                                 (W1.transpose(3, 2, 0, 1), B1[:, None, None]))

    def __call__(self, x):  # one (2, 8, 8) image; Equinox pools a 5-d copy under vmap
        h = eqx.nn.MaxPool2d(2, 2)(jax.nn.relu(self.conv1(x)))
        return eqx.nn.AvgPool2d(2, 2)(h).mean(axis=(1, 2)) @ D


def pools_nhwc(x):
    with jax.named_scope("conv1"):
        h = _conv(x, W1, "NHWC") + B1
    h = jax.lax.reduce_window(jax.nn.relu(h), -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    h = jax.lax.reduce_window(h, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4.0
    return h.mean(axis=(1, 2)) @ D


def test_equinox_max_and_average_pools_are_four_dimensional_sites():
    f = jp.as_function(EqxPools())
    np.testing.assert_allclose(f(XF), pools_nhwc(X), rtol=1e-5, atol=1e-5)
    shapes = {s.name: (s.shape, s.op) for s in jp.sites(f, XF)}
    want = {s.name: (s.shape, s.op) for s in jp.sites(pools_nhwc, X)}
    assert shapes["max_pool"] == want["max_pool"] == ((5, 4, 4, 4), "max_pool")
    assert shapes["avg_pool"] == want["avg_pool"] == ((5, 2, 2, 4), "avg_pool")
    _, got = jp.capture(f, ["max_pool", "avg_pool"])(XF)
    _, ref = jp.capture(pools_nhwc, ["max_pool", "avg_pool"])(X)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-5, err_msg=name)
    t = jnp.argmax(pools_nhwc(X), -1)
    np.testing.assert_allclose(grad_cam(f, XF, t, site="max_pool"),
                               jnp.moveaxis(grad_cam(pools_nhwc, X, t, site="max_pool"), -1, 1),
                               rtol=1e-4, atol=1e-5)


def _channel_axes(f, x):
    return {s.name: (s.shape, s.channel_axis) for s in jp.sites(f, x)}


def test_where_the_channel_axis_is_read_from():
    w3 = jnp.ones((4, 2, 6))

    def f(x):  # (n, 2, 8, 8)
        with jax.named_scope("conv"):
            h = _conv(x, W1.transpose(3, 2, 0, 1), "NCHW")
        with jax.named_scope("to_nhwc"):       # the model moves its channels last itself
            h = h.transpose(0, 2, 3, 1)
        with jax.named_scope("heads"):          # two output axes from the weight: no channel axis
            q = jnp.einsum("bhwc,cgk->bhwgk", h, w3)
        with jax.named_scope("scores"):         # no weight at all
            s = jnp.einsum("bhwgk,bhwgk->bhwg", q, q)
        with jax.named_scope("flat"):
            z = h.reshape(h.shape[0], -1)
        return z[:, :3] + s.sum(axis=(1, 2))[:, :1]

    axes = _channel_axes(f, XF)
    assert axes["conv"] == ((5, 8, 8, 4), 1)
    assert axes["to_nhwc"] == ((5, 8, 8, 4), -1)
    assert axes["heads"] == ((5, 8, 8, 2, 6), None)
    assert axes["scores"] == ((5, 8, 8, 2), None)
    assert axes["flat"] == ((5, 256), None)


@pytest.mark.parametrize("f, x, want", [
    (nhwc, X, 3), (nchw, XF, 1), (lambda x: jnp.tanh(x @ D[:2]), X[:, 0, 0], None),
    (jp.as_function(EqxNet()), XF, 1),
])
def test_input_channel_axis(f, x, want):
    assert input_channel_axis(program_of(f, x)[0]) == want


class OneChannel(eqx.Module):
    conv: eqx.nn.Conv2d

    def __call__(self, x):  # one (1, 8, 8) image: its channel axis has size 1
        return self.conv(x).sum(axis=(1, 2))


def test_input_channel_axis_of_a_one_channel_equinox_image():
    f = jp.as_function(OneChannel(eqx.nn.Conv2d(1, 3, 3, key=jax.random.key(0))))
    assert input_channel_axis(program_of(f, XF[:, :1])[0]) == 1


def test_one_grey_nchw_image_is_read_channels_first():
    # at a batch of one the way back from the conv passes axes of size one only: ambiguous
    from jaxplain.attribution import occlusion
    from jaxplain.core._channels import channels_last_view, image_channel_axis
    f = jp.as_function(OneChannel(eqx.nn.Conv2d(1, 3, 3, padding=1, key=jax.random.key(0))))
    one = XF[:1, :1]
    assert image_channel_axis(f, one) == 1 and channels_last_view(f, one)[1] == 1
    two = XF[:2, :1]
    np.testing.assert_allclose(occlusion(f, one, 0, window=(2, 2)),
                               occlusion(f, two, 0, window=(2, 2))[:1], rtol=1e-5, atol=1e-6)


def test_deletion_curves_treat_nchw_pixels_as_pixels():
    from jaxplain import metrics
    from jaxplain.attribution import gradient_x_input
    t = jnp.argmax(nhwc(X), -1)
    a = gradient_x_input(nhwc, X, t)
    base = jnp.linspace(-1.0, 1.0, 2)
    want = metrics.deletion(nhwc, X, t, a, steps=8, baseline=base)
    for f in (nchw, jp.as_function(EqxNet())):
        got = metrics.deletion(f, XF, t, jnp.moveaxis(a, -1, 1), steps=8, baseline=base[:, None, None])
        np.testing.assert_allclose(got.values, want.values, rtol=1e-4, atol=1e-6)
        lerf = metrics.pixel_perturbation(f, XF, jnp.moveaxis(a, -1, 1), fractions=(0.1, 0.3))
        np.testing.assert_allclose(lerf, metrics.pixel_perturbation(nhwc, X, a, fractions=(0.1, 0.3)),
                                   rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("pool", ["avg", "max", "pad"])
def test_a_pool_or_pad_before_the_first_conv_keeps_the_inputs_channel_axis(pool):
    # An NCHW model that pools (or pads) its input before the first convolution: the way back
    # from that convolution's input channels to the model's input goes through the pool, which
    # leaves the channel axis alone. It used to be lost, so Grad-CAM resized its map onto (C, H)
    # (shape (n, 2, 8, 1)) and occlusion slid its 2x2 window over channels and height.
    def first(z, layout):
        window = (1, 2, 2, 1) if layout == "NHWC" else (1, 1, 2, 2)
        if pool == "avg":
            return jax.lax.reduce_window(z, 0.0, jax.lax.add, window, window, "VALID") / 4
        if pool == "max":
            return jax.lax.reduce_window(z, -jnp.inf, jax.lax.max, window, window, "VALID")
        pads = [(0, 0, 0), (1, 1, 0), (1, 1, 0), (0, 0, 0)]
        return jax.lax.pad(z, 0.0, pads if layout == "NHWC" else [pads[i] for i in (0, 3, 1, 2)])

    def twin(layout):
        w = W1 if layout == "NHWC" else W1.transpose(3, 2, 0, 1)
        axes = (1, 2) if layout == "NHWC" else (2, 3)

        def f(z):
            with jax.named_scope("conv1"):
                h = jax.nn.relu(_conv(first(z, layout), w, layout))
            return h.mean(axis=axes) @ D
        return f

    x_nchw = jnp.moveaxis(X, -1, 1)
    assert input_channel_axis(program_of(twin("NCHW"), x_nchw)[0]) == 1
    cam = grad_cam(twin("NCHW"), x_nchw, 0, site="conv1/relu")
    assert cam.shape == (5, 1, 8, 8)
    np.testing.assert_allclose(cam, jnp.moveaxis(grad_cam(twin("NHWC"), X, 0, site="conv1/relu"),
                                                 -1, 1), rtol=1e-5, atol=1e-6)
    occluded = jp.attribution.occlusion(twin("NCHW"), x_nchw, 0, window=(2, 2), stride=2)
    np.testing.assert_allclose(occluded, jnp.moveaxis(jp.attribution.occlusion(
        twin("NHWC"), X, 0, window=(2, 2), stride=2), -1, 1), rtol=1e-5, atol=1e-6)
