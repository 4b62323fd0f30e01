"""Preprocessing between the input and the first convolution (a resize, a crop, a channel flip or
permutation, CoordConv, a LayerNorm, ``x + x``, a swish) keeps the input's channel axis: the
perturbation metrics rank and replace whole pixels, as for the same network without it."""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import metrics
from jaxplain.metrics._perturb import Layout, layout

_K = jax.random.split(jax.random.key(0), 4)
W = jax.random.normal(_K[0], (3, 3, 3, 4)) * 0.5     # HWIO
D = jax.random.normal(_K[1], (4, 3))
X = jax.random.uniform(_K[2], (4, 8, 8, 3))          # NHWC
A = jax.random.normal(_K[3], X.shape)                # an attribution map
T = jnp.array([0, 1, 2, 0])
PERM, SPATIAL = jnp.array([2, 0, 1]), jnp.array([3, 0, 6, 1, 7, 2, 5, 4])


def net(pre=lambda z: z, kernel=W):
    """``pre``, a SAME convolution, ReLU, a mean over the grid and a dense head, on NHWC x."""
    def f(x):
        h = jax.lax.conv_general_dilated(pre(x), kernel, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.relu(h).mean(axis=(1, 2)) @ D
    return f


def _crop(z):  # a crop by negative padding: a `pad`, which the way back always followed
    return jax.lax.pad(z, 0.0, [(0, 0, 0), (-1, -1, 0), (-1, -1, 0), (0, 0, 0)])


def _coords(z):  # CoordConv: the row index as a fourth channel
    rows = jnp.arange(z.shape[1], dtype=z.dtype)[:, None, None]
    return jnp.concatenate([z, jnp.broadcast_to(rows, z.shape[:3] + (1,))], -1)


def _layer_norm(z):
    params = {"params": {"scale": jnp.linspace(0.5, 1.5, 3), "bias": jnp.linspace(-0.1, 0.1, 3)}}
    return nn.LayerNorm().apply(params, z)


# name -> (a model with the op before its first convolution, the same function spelled
# without it, or None where there is no such spelling)
CASES = {
    "slice": (net(lambda z: z[:, 1:-1, 1:-1]), net(_crop)),
    "dynamic_slice": (net(lambda z: jax.lax.dynamic_slice(z, (0, 1, 1, 0), (len(z), 6, 6, 3))),
                      net(_crop)),
    "rev channels": (net(lambda z: z[..., ::-1]), net(kernel=W[:, :, ::-1])),
    "rev height": (net(lambda z: z[:, ::-1]), net(kernel=W[::-1])),
    "gather channels": (net(lambda z: z[..., PERM]), net(kernel=W[:, :, jnp.argsort(PERM)])),
    "take rows": (net(lambda z: jnp.take(jnp.take(z, SPATIAL, 1), jnp.argsort(SPATIAL), 1)),
                  net()),
    "nearest resize": (net(lambda z: jax.image.resize(z, (len(z), 16, 16, 3),
                                                      "nearest")[:, ::2, ::2]), net()),
    "CoordConv": (net(_coords, jnp.concatenate([W, jnp.zeros((3, 3, 1, 4))], 2)), net()),
    "concatenate height": (net(lambda z: jnp.concatenate([z, z[:, :2]], 1)[:, :8]), net()),
    "x + x": (net(lambda z: z + z), net(lambda z: 2.0 * z)),
    "linear resize": (net(lambda z: jax.image.resize(z, (len(z), 12, 12, 3), "linear")), None),
    "LayerNorm": (net(_layer_norm), None),
    "x * sigmoid(x)": (net(lambda z: z * jax.nn.sigmoid(z)), None),
}


def _nchw(f):
    """`f` as a model of NCHW images that moves their channels last itself."""
    return lambda x: f(jnp.transpose(x, (0, 2, 3, 1)))


def _deletion(f, x, a, baseline="mean"):
    return metrics.deletion(f, x, T, a, steps=8, baseline=baseline, output="logit").values


@pytest.mark.parametrize("name", CASES)
def test_the_op_before_the_first_conv_keeps_the_channels_last(name):
    f, twin = CASES[name]
    assert layout(f, X) == Layout(3, True)
    if twin is not None:   # the same function: the same pixels ranked, per-channel means
        np.testing.assert_allclose(twin(X), f(X), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(_deletion(f, X, A), _deletion(twin, X, A), rtol=1e-4,
                                   atol=1e-5)
    else:                  # whole pixels: as their channel sums, with per-channel means
        np.testing.assert_allclose(
            _deletion(f, X, A),
            _deletion(f, X, A.sum(-1, keepdims=True), X.mean((1, 2), keepdims=True)),
            rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_an_nchw_model_that_moves_its_channels_last_reads_them_on_axis_1(name):
    f, twin = CASES[name]
    g, xc, ac = _nchw(f), jnp.moveaxis(X, -1, 1), jnp.moveaxis(A, -1, 1)
    assert layout(g, xc) == Layout(1, True)
    np.testing.assert_allclose(_deletion(g, xc, ac), _deletion(twin or f, X, A), rtol=1e-4,
                               atol=1e-5)


def _space_to_depth(z):  # (n, 8, 8, 3) -> (n, 4, 4, 12): the channels merged with the pixels
    n = len(z)
    return z.reshape(n, 4, 2, 4, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, 4, 4, 12)


def test_a_channel_axis_lost_on_the_way_back_is_warned_about():
    f = net(_space_to_depth, jax.random.normal(_K[0], (3, 3, 12, 4)))
    with pytest.warns(UserWarning, match=r"channel axis of x \(4, 8, 8, 3\) was not found "
                                         r"\(.*lost at the op 'reshape'\).*a\.sum\(-1, keepdims"):
        assert layout(f, X) == Layout(None, True)    # every element a feature, as before


def test_a_grey_volume_read_through_an_added_axis_is_no_loss():
    kernel = jax.random.normal(_K[0], (3, 3, 3, 1, 4))
    f = lambda v: jax.nn.relu(jax.lax.conv_general_dilated(
        v[..., None], kernel, (1, 1, 1), "SAME",
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))).mean((1, 2, 3)) @ D
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert layout(f, X) == Layout(None, True)
        _deletion(f, X, A)
