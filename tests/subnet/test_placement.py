"""Scored sites before a per-unit shift (a BatchNorm, a bias added after the site, a depthwise
convolution's bias) are found and warned about: their removed units would still feed the shift
downstream."""

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
    found = _placement.shifted(f, x, ("conv1", "conv_b"))
    # conv1's channels reach the next convolution through bn1 and its ReLU; conv_b's reach the
    # residual sum straight from bn_b.
    assert [(s, t) for s, t, _ in found] == [("conv1", "relu"), ("conv_b", "bn_b")]
    np.testing.assert_allclose(found[0][2], np.max(np.maximum(shifts["bn1"], 0)), rtol=1e-5)
    np.testing.assert_allclose(found[1][2], np.max(np.abs(shifts["bn_b"])), rtol=1e-5)
    # And it is what apply would compute: with conv1 at 0, bn1 holds the shift, unit by unit.
    zeroed = jp.intervene(f, {"conv1": jnp.zeros_like})
    _, got = jp.capture(zeroed, ["bn1"])(x)
    np.testing.assert_allclose(np.asarray(got["bn1"])[0, 0, 0], shifts["bn1"], rtol=1e-5,
                               atol=1e-6)


def test_sites_after_the_shift_and_mixing_layers_are_not_flagged():
    f, x, _ = _linen()
    assert _placement.shifted(f, x, ("bn1", "bn_b")) == []
    # bn_b's next site is the residual add, which still depends on the input (the shortcut).
    assert _placement.shifted(f, x, ("bn_b",)) == []
    # A ReLU site before a biased convolution: the bias belongs to the convolution's units.
    g, xg, _ = _nets.planted(0.01)
    assert _placement.shifted(g, xg, ("relu", "relu_1")) == []


class Depthwise(nn.Module):
    groups: int = 4

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="stem")(x))
        x = nn.relu(nn.Conv(4, (3, 3), feature_group_count=self.groups, name="dw")(x))
        return nn.Dense(3, name="head")(x.mean(axis=(1, 2)))


def _depthwise(groups):
    x = jax.random.uniform(jax.random.key(0), (8, 8, 8, 1))
    variables = Depthwise(groups).init(jax.random.key(1), x)
    return jp.as_function(Depthwise(groups), jax.tree.map(lambda a: a + 0.1, variables)), x


def test_a_site_before_a_depthwise_convolution_with_a_bias_is_found():
    # A depthwise convolution maps unit to unit, so its bias (0.1) is the removed unit's own:
    # with 'relu' at 0 its channels still carry the bias into the head.
    f, x = _depthwise(groups=4)
    [(s, t, leak)] = _placement.shifted(f, x, ("relu",))
    assert (s, t) == ("relu", "relu_1") and leak == pytest.approx(0.1)
    zeroed = jp.intervene(f, {"relu": jnp.zeros_like})
    removed = jp.intervene(f, {"relu": jnp.zeros_like, "dw": jnp.zeros_like})
    assert float(jnp.max(jnp.abs(zeroed(x) - removed(x)))) > 0.01  # the bias changes the output
    # Scoring 'relu_1' too, the closure removes its units that only hold the bias.
    assert _placement.shifted(f, x, ("relu", "relu_1")) == []
    # A convolution that mixes channels: its bias belongs to its own units.
    g, x = _depthwise(groups=1)
    assert _placement.shifted(g, x, ("relu",)) == []


def test_a_bias_added_after_the_site_is_found():
    w = jax.random.normal(jax.random.key(1), (4, 6))
    b = jnp.linspace(-1.0, 1.0, 6)
    w2 = jax.random.normal(jax.random.key(2), (6, 3))

    def f(x):
        with jax.named_scope("hidden"):
            h = x @ w
        return jax.nn.relu(h + b) @ w2

    x = jax.random.normal(jax.random.key(3), (5, 4))
    assert _placement.shifted(f, x, ("hidden",)) == [("hidden", "relu", 1.0)]


def test_a_sigmoid_gate_of_a_removed_unit_is_found_without_naming_a_batchnorm():
    # Squeeze-and-excitation: a removed unit of 'fc2' still gates its channel by sigmoid(0).
    w1 = jax.random.normal(jax.random.key(1), (4, 6))
    w2 = jax.random.normal(jax.random.key(2), (6, 3))

    def f(x):
        h = jax.nn.relu(x @ w1)
        with jax.named_scope("fc2"):
            z = h @ jnp.eye(6)
        return (h * jax.nn.sigmoid(z)) @ w2

    x = jax.random.normal(jax.random.key(3), (5, 4))
    assert _placement.shifted(f, x, ("fc2",)) == [("fc2", "sigmoid", 0.5)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        subnet.extract(f, x, sites="fc2", key=KEY, steps=0, finetune_steps=0, fidelity=0.0)
    [message] = [str(w.message) for w in caught if "still feed constants" in str(w.message)]
    assert "sigmoid gate" in message and "BatchNorm outputs" not in message


def test_extract_warns_about_sites_before_batchnorm():
    f, x, _ = _linen()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        subnet.extract(f, x, sites=["conv1", "conv_b"], key=KEY, steps=5, finetune_steps=2,
                       l1=1e-2, fidelity=0.0)
    shifted = [w for w in caught if "still feed constants" in str(w.message)]
    assert len(shifted) == 1 and shifted[0].filename == __file__
    assert "['relu', 'bn_b']" in str(shifted[0].message)


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
    assert _placement.shifted(f, x, ("model/conv",)) == [
        ("model/conv", "model/relu", float(channels))]
    assert _placement.shifted(f, x, ("model/bn",)) == []


def test_extract_warns_about_a_site_before_an_equinox_batchnorm():
    f, x = _equinox(4, 0)  # raised a broadcasting ValueError: units read off the width axis
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        subnet.extract(f, x, sites="model/conv", key=KEY, steps=0, finetune_steps=0,
                       fidelity=0.0)
    shifted = [str(w.message) for w in caught if "still feed constants" in str(w.message)]
    assert len(shifted) == 1 and "['model/relu']" in shifted[0]
