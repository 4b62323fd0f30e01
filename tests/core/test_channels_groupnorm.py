"""The channel axis through a reshape that splits it and one that restores it: an Equinox
``GroupNorm(groups, c)`` reshapes ``(c, h, w) -> (groups, c / groups, h, w)`` and back, and the
sites after it keep their channels (presented last), as they do after ``GroupNorm(1, c)``."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain.attribution import grad_cam
from tests.core.test_channels import W1, XF, _conv

_K = jax.random.split(jax.random.key(0), 3)
X = jax.random.normal(_K[2], (3, 2, 6, 8))   # NCHW
T = jnp.array([0, 1, 2])


class Net(eqx.Module):
    conv: eqx.nn.Conv2d
    gn: eqx.nn.GroupNorm
    head: eqx.nn.Linear

    def __call__(self, x):  # one (2, 6, 8) image
        return self.head(self.features(x).mean((1, 2)))

    def features(self, x):  # (4, 6, 8)
        return jax.nn.relu(self.gn(self.conv(x)))


def _net(groups):
    return Net(eqx.nn.Conv2d(2, 4, 3, padding=1, key=_K[0]), eqx.nn.GroupNorm(groups, 4),
               eqx.nn.Linear(4, 3, key=_K[1]))


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_sites_after_a_group_norm_keep_their_channel_axis(groups):
    sites = {s.name: (s.shape, s.channel_axis) for s in jp.sites(jp.as_function(_net(groups)), X)}
    for name in ("conv", "gn", "relu"):
        assert sites[name] == ((3, 6, 8, 4), 1), name


@pytest.mark.parametrize("groups", [2, 4])
def test_capture_after_a_group_norm_is_the_value_channels_last(groups):
    net = _net(groups)
    _, got = jp.capture(jp.as_function(net), ["relu"])(X)
    np.testing.assert_allclose(got["relu"], jnp.moveaxis(jax.vmap(net.features)(X), 1, -1),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("groups", [2, 4])
def test_grad_cam_after_a_group_norm_is_the_hand_grad_cam(groups):
    net = _net(groups)

    def hand(x, t):  # Grad-CAM over the filters, axis 0 of the model's (4, 6, 8) value
        a = net.features(x)
        g = jax.grad(lambda a: net.head(a.mean((1, 2)))[t])(a)
        return jax.nn.relu(jnp.einsum("c,chw->hw", g.mean((1, 2)), a))

    got = grad_cam(jp.as_function(net), X, T, site="relu", resize=False)
    np.testing.assert_allclose(got, jax.vmap(hand)(X, T), rtol=1e-4, atol=1e-6)


def _reshaped(to):
    """A conv (NCHW, 4 channels) whose value is reshaped by `to` under the scope "out"."""
    def f(x):  # (n, 2, 8, 8)
        with jax.named_scope("conv"):
            h = _conv(x, W1.transpose(3, 2, 0, 1), "NCHW")
        with jax.named_scope("out"):
            h = jnp.tanh(to(h))
        return h.reshape(h.shape[0], -1)[:, :3]
    return f


@pytest.mark.parametrize("to", [
    lambda h: h.reshape(h.shape[0], 4 * 8, 8),                  # channels merged with height
    lambda h: h.reshape(h.shape[0], 2, 2, 8, 8),                # split into groups, not restored
    lambda h: jnp.moveaxis(h, 1, -1).reshape(h.shape[0], 8, 32),  # NHWC: width and channels
    lambda h: h.reshape(h.shape[0], 2, 2, 8, 8).transpose(0, 2, 1, 3, 4).reshape(h.shape),
    lambda h: jax.lax.reshape(h, h.shape, dimensions=(0, 2, 3, 1)),  # transposes first
], ids=["merged", "split", "nhwc-merged", "groups-swapped", "reshape-dimensions"])
def test_a_reshape_that_does_not_restore_the_channels_leaves_no_channel_axis(to):
    sites = {s.name: (s.shape, s.channel_axis) for s in jp.sites(_reshaped(to), XF)}
    assert sites["conv"][1] == 1
    assert sites["out"][1] is None
