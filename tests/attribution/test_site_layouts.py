"""Sites between an NCHW input and the first convolution are presented channels-last.

A model that normalizes (or flips, crops, reorders the channels of) its NCHW input before the
first convolution has sites there that keep the input's layout; the kernel gives them the
input's channel axis, so the site methods answer as on the same network written NHWC.
"""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain.attribution import (grad_cam, layer_integrated_gradients, neuron_conductance,
                                  site_output)

RNG = np.random.default_rng(0)
MEAN = jnp.asarray([0.1, -0.2, 0.3])
STD = jnp.asarray([0.5, 1.5, 1.0])
W = jnp.asarray(RNG.normal(0, 0.5, (3, 3, 3, 4)).astype(np.float32))  # HWIO
D = jnp.asarray(RNG.normal(0, 0.5, (4, 2)).astype(np.float32))
X = jnp.asarray(RNG.normal(size=(2, 3, 6, 5)).astype(np.float32))  # NCHW, H != W != C
T = jnp.array([0, 1])
PRE = {  # each on NHWC, with the channel axis given
    "normalize": lambda x, c: ((x - jnp.expand_dims(MEAN, range(1, 4 - c)))
                               / jnp.expand_dims(STD, range(1, 4 - c))),
    "flip": lambda x, c: jnp.flip(x, 3 if c == 1 else 2),
    "bgr": lambda x, c: jnp.take(x, jnp.array([2, 1, 0]), axis=c),
}


def _model(pre: str, layout: str):
    c = 1 if layout == "NCHW" else 3

    def f(x):
        with jax.named_scope("pre"):
            x = PRE[pre](x, c)
        with jax.named_scope("conv"):
            h = jax.lax.conv_general_dilated(
                x, W.transpose(3, 2, 0, 1) if c == 1 else W, (1, 1), "SAME",
                dimension_numbers=(layout, "OIHW" if c == 1 else "HWIO", layout))
        return jax.nn.relu(h).mean(axis=(2, 3) if c == 1 else (1, 2)) @ D

    return f


@pytest.mark.parametrize("pre", sorted(PRE))
def test_a_site_before_the_first_conv_is_channels_last_like_the_nhwc_twins(pre):
    nchw, nhwc, x_last = _model(pre, "NCHW"), _model(pre, "NHWC"), X.transpose(0, 2, 3, 1)
    site = jp.sites(nchw, X)[0]
    assert (site.name, site.shape, site.channel_axis) == ("pre", (2, 6, 5, 3), 1)
    close = dict(rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(jp.capture(nchw, "pre")(X)[1]["pre"],
                               jp.capture(nhwc, "pre")(x_last)[1]["pre"], **close)
    np.testing.assert_allclose(grad_cam(nchw, X, T, site="pre", relu=False, resize=False),
                               grad_cam(nhwc, x_last, T, site="pre", relu=False, resize=False),
                               **close)
    np.testing.assert_allclose(site_output(nchw, "pre", reduce="mean")(X),
                               site_output(nhwc, "pre", reduce="mean")(x_last), **close)


def test_site_methods_at_an_input_normalization_agree_with_the_nhwc_twin():
    nchw, nhwc = _model("normalize", "NCHW"), _model("normalize", "NHWC")
    x_last = X.transpose(0, 2, 3, 1)
    close = dict(rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad_cam(nchw, X, T, site="pre")[:, 0],
                               grad_cam(nhwc, x_last, T, site="pre")[..., 0], **close)
    np.testing.assert_allclose(layer_integrated_gradients(nchw, X, T, site="pre", steps=8),
                               layer_integrated_gradients(nhwc, x_last, T, site="pre", steps=8),
                               **close)
    unit = dict(site="pre", neuron=(1, 2, 0), steps=8)
    np.testing.assert_allclose(neuron_conductance(nchw, X, T, **unit),
                               neuron_conductance(nhwc, x_last, T, **unit).transpose(0, 3, 1, 2),
                               **close)


def test_grad_cam_at_an_input_normalization_is_the_closed_form_with_channels_on_axis_1():
    f = _model("normalize", "NCHW")
    a = PRE["normalize"](X, 1)

    def rest(a):  # the model from the normalized input on
        h = jax.lax.conv_general_dilated(a, W.transpose(3, 2, 0, 1), (1, 1), "SAME",
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return (jax.nn.relu(h).mean(axis=(2, 3)) @ D)[jnp.arange(2), T].sum()

    g = jax.grad(rest)(a)
    want = jax.nn.relu((g.mean(axis=(2, 3), keepdims=True) * a).sum(1))
    np.testing.assert_allclose(grad_cam(f, X, T, site="pre", resize=False), want,
                               rtol=1e-4, atol=1e-7)


def test_an_equinox_models_normalize_submodule_gets_the_inputs_channel_axis():
    class Normalize(eqx.Module):
        def __call__(self, x):
            return (x - MEAN[:, None, None]) / STD[:, None, None]

    class Net(eqx.Module):
        norm: Normalize
        conv: eqx.nn.Conv2d

        def __call__(self, x):  # one (3, H, W) image
            return jax.nn.relu(self.conv(self.norm(x))).mean(axis=(1, 2))

    f = jp.as_function(Net(Normalize(), eqx.nn.Conv2d(3, 4, 3, padding=1, key=jax.random.key(0))))
    norm = {s.name: s for s in jp.sites(f, X)}["norm"]
    assert norm.shape == (2, 6, 5, 3) and norm.channel_axis == 1
    np.testing.assert_allclose(site_output(f, "norm", reduce="mean")(X),
                               PRE["normalize"](X, 1).mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)


def test_a_site_whose_channel_axis_stays_unknown_is_warned_about():
    w = jnp.asarray(RNG.normal(0, 0.5, (4, 6, 3, 3)).astype(np.float32))

    def f(x):  # an integral image along H as extra channels: cumsum forgets the channel axis
        with jax.named_scope("integral"):
            s = jnp.cumsum(x, axis=2)
        h = jax.lax.conv_general_dilated(jnp.concatenate([x, s], 1), w, (1, 1), "SAME",
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return jax.nn.relu(h).mean(axis=(2, 3))

    assert {s.name: s for s in jp.sites(f, X)}["integral"].channel_axis is None
    for call in (lambda: grad_cam(f, X, 0, site="integral", resize=False),
                 lambda: site_output(f, "integral", reduce="mean")(X),
                 lambda: neuron_conductance(f, X, 0, site="integral", neuron=(0, 0, 0), steps=4)):
        with pytest.warns(UserWarning, match="channel axis of site 'integral'"):
            call()
    with warnings.catch_warnings():  # a flat index does not depend on the layout
        warnings.simplefilter("error")
        neuron_conductance(f, X, 0, site="integral", neuron=0, steps=4)
