"""Scored sites before a per-unit shift (a BatchNorm, a bias added after the site) are found
and warned about: their removed units would still feed the shift downstream."""

import warnings

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import subnet
from jaxplain.subnet import _placement
from tests.subnet import _nets

KEY = jax.random.key(0)


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.BatchNorm(use_running_average=True, name="bn1")(
            nn.Conv(4, (3, 3), use_bias=False, name="conv1")(x)))
        h = nn.BatchNorm(use_running_average=True, name="bn_b")(
            nn.Conv(4, (3, 3), use_bias=False, name="conv_b")(x))
        x = nn.relu(x + h)
        return nn.Dense(2, name="head")(jnp.mean(x, axis=(1, 2)))


def _linen():
    x, _ = _nets.region()
    variables = Net().init(jax.random.key(1), x)
    rng = np.random.default_rng(0)
    # Trained-looking statistics: a non-zero shift beta - mean * gamma / sqrt(var + eps).
    stats = {bn: {"mean": jnp.asarray(rng.normal(size=4), jnp.float32),
                  "var": jnp.asarray(rng.uniform(0.5, 2.0, 4), jnp.float32)}
             for bn in ("bn1", "bn_b")}
    params = dict(variables["params"])
    for bn in ("bn1", "bn_b"):
        params[bn] = {"scale": jnp.asarray(rng.uniform(0.5, 1.5, 4), jnp.float32),
                      "bias": jnp.asarray(rng.normal(size=4), jnp.float32)}
    variables = {"params": params, "batch_stats": stats}
    shifts = {bn: np.asarray(params[bn]["bias"] - stats[bn]["mean"] * params[bn]["scale"]
                             / np.sqrt(stats[bn]["var"] + 1e-5)) for bn in ("bn1", "bn_b")}
    return jp.as_function(Net(), variables), x, shifts


def test_sites_before_batchnorm_are_found_with_their_shift():
    f, x, shifts = _linen()
    found = _placement.shifted(f, x, ("conv1", "conv_b"), KEY)
    assert [(s, t) for s, t, _ in found] == [("conv1", "bn1"), ("conv_b", "bn_b")]
    for (_, t, leak) in found:
        np.testing.assert_allclose(leak, np.max(np.abs(shifts[t])), rtol=1e-5)
    # And it is what apply would compute: with conv1 at 0, bn1 holds the shift, unit by unit.
    zeroed = jp.intervene(f, {"conv1": jnp.zeros_like})
    _, got = jp.capture(zeroed, ["bn1"])(x)
    np.testing.assert_allclose(np.asarray(got["bn1"])[0, 0, 0], shifts["bn1"], rtol=1e-5,
                               atol=1e-6)


def test_sites_after_the_shift_and_mixing_layers_are_not_flagged():
    f, x, _ = _linen()
    assert _placement.shifted(f, x, ("bn1", "bn_b"), KEY) == []
    # bn_b's next site is the residual add, which still depends on the input (the shortcut).
    assert _placement.shifted(f, x, ("bn_b",), KEY) == []
    # A ReLU site before a biased convolution: the bias belongs to the convolution's units.
    g, xg, _ = _nets.planted(0.01)
    assert _placement.shifted(g, xg, ("relu", "relu_1"), KEY) == []


class Depthwise(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="stem")(x))
        x = nn.relu(nn.Conv(4, (3, 3), feature_group_count=4, name="dw")(x))
        return nn.Dense(3, name="head")(x.mean(axis=(1, 2)))


def test_a_site_before_a_depthwise_convolution_is_not_flagged():
    # A depthwise convolution maps unit to unit, like a shift, but its bias is its own units':
    # scoring 'relu' before it is right (the trial's warning advised scoring 'dw' instead).
    x = jax.random.uniform(jax.random.key(0), (8, 8, 8, 1))
    variables = Depthwise().init(jax.random.key(1), x)
    f = jp.as_function(Depthwise(), jax.tree.map(lambda a: a + 0.1, variables))
    assert _placement.shifted(f, x, ("relu",), KEY) == []


def test_a_bias_added_after_the_site_is_found():
    w = jax.random.normal(jax.random.key(1), (4, 6))
    b = jnp.linspace(-1.0, 1.0, 6)
    w2 = jax.random.normal(jax.random.key(2), (6, 3))

    def f(x):
        with jax.named_scope("hidden"):
            h = x @ w
        return jax.nn.relu(h + b) @ w2

    x = jax.random.normal(jax.random.key(3), (5, 4))
    assert _placement.shifted(f, x, ("hidden",), KEY) == [("hidden", "relu", 1.0)]


def test_extract_warns_about_sites_before_batchnorm():
    f, x, _ = _linen()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        subnet.extract(f, x, sites=["conv1", "conv_b"], key=KEY, steps=5, finetune_steps=2,
                       l1=1e-2, fidelity=0.0)
    shifted = [w for w in caught if "still feed constants" in str(w.message)]
    assert len(shifted) == 1 and shifted[0].filename == __file__
    assert "['bn1', 'bn_b']" in str(shifted[0].message)


class _Net(eqx.Module):
    conv: eqx.nn.Conv2d
    bn: eqx.nn.BatchNorm
    head: eqx.nn.Linear

    def __call__(self, x, state):
        h, state = self.bn(self.conv(x), state)
        return self.head(jax.nn.relu(h).mean(axis=(1, 2))), state


class _Inference(eqx.Module):
    model: _Net
    state: eqx.nn.State

    def __call__(self, x):
        return self.model(x, self.state)[0]


def _equinox(channels, padding):
    """An Equinox conv -> BatchNorm (inference, shift 1 .. channels) -> head on 8x8 NCHW
    images: maps of 8x8 with padding 1, 6x6 without."""
    k = jax.random.split(jax.random.key(1), 2)
    net, state = eqx.nn.make_with_state(_Net)(
        eqx.nn.Conv2d(1, channels, 3, padding=padding, key=k[0]),
        eqx.nn.BatchNorm(channels, "batch", mode="ema"), eqx.nn.Linear(channels, 3, key=k[1]))
    net = eqx.tree_at(lambda m: m.bn.bias, eqx.nn.inference_mode(net),
                      jnp.arange(1.0, channels + 1.0))
    x = jax.random.normal(jax.random.key(2), (6, 1, 8, 8))
    return jp.as_function(_Inference(net, state)), x


@pytest.mark.parametrize("channels, padding", [(8, 1), (4, 0)], ids=["H=W=C", "H!=C"])
def test_a_site_before_an_equinox_batchnorm_is_found(channels, padding):
    f, x = _equinox(channels, padding)
    assert _placement.shifted(f, x, ("model/conv",), KEY) == [
        ("model/conv", "model/bn", float(channels))]
    assert _placement.shifted(f, x, ("model/bn",), KEY) == []


def test_extract_warns_about_a_site_before_an_equinox_batchnorm():
    f, x = _equinox(4, 0)  # raised a broadcasting ValueError: units read off the width axis
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        subnet.extract(f, x, sites="model/conv", key=KEY, steps=0, finetune_steps=0,
                       fidelity=0.0)
    shifted = [str(w.message) for w in caught if "still feed constants" in str(w.message)]
    assert len(shifted) == 1 and "['model/bn']" in shifted[0]
