"""A unit removed before a depthwise convolution keeps its channel: the convolution's bias and a
BatchNorm after it still send a constant where the channels mix (MobileNet's expansion ReLU6)."""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import subnet
from jaxplain.subnet import _placement


class Block(nn.Module):
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        h = nn.relu6(nn.Conv(8, (1, 1), name="expand")(x))
        h = nn.Conv(8, (3, 3), strides=self.stride, feature_group_count=8, use_bias=False,
                    name="dw")(h)
        h = nn.relu6(nn.BatchNorm(use_running_average=True, name="bn_d")(h))
        return nn.Dense(4, name="head")(h.mean((1, 2)))


def _block(stride=1, mean=-jnp.linspace(0.5, 1.5, 8)):
    """The block with a BatchNorm shift of ``-mean`` (0.5 .. 1.5 by default)."""
    x = jax.random.uniform(jax.random.key(0), (16, 6, 6, 2))
    variables = Block(stride).init(jax.random.key(1), x)
    variables["batch_stats"]["bn_d"]["mean"] = mean
    return jp.as_function(Block(stride), variables), x


@pytest.mark.parametrize("stride", [1, 2])
def test_a_unit_before_a_depthwise_convolution_and_batchnorm_is_found(stride):
    f, x = _block(stride)
    [(s, t, leak)] = _placement.shifted(f, x, ("relu6",))
    assert (s, t) == ("relu6", "relu6_1") and leak == pytest.approx(1.5, rel=1e-4)
    # What that means: with 'relu6' at 0, removing its channels after the shift as well moves
    # the logits.
    zeroed = jp.intervene(f, {"relu6": jnp.zeros_like})
    removed = jp.intervene(f, {"relu6": jnp.zeros_like, "bn_d": jnp.zeros_like})
    assert float(jnp.max(jnp.abs(zeroed(x) - removed(x)))) > 0.1
    # Scored after the shift, nothing is left.
    assert _placement.shifted(f, x, ("bn_d",)) == []
    assert _placement.shifted(f, x, ("relu6_1",)) == []


def test_a_constant_held_at_a_clipping_activation_is_found():
    # A shift of 10 holds ReLU6 at 6, where its derivative is 0: still a constant sent on.
    f, x = _block(mean=-jnp.full((8,), 10.0))
    assert _placement.shifted(f, x, ("relu6",)) == [("relu6", "relu6_1", 6.0)]


def test_a_shift_the_activation_clips_to_zero_is_not_flagged():
    f, x = _block(mean=jnp.full((8,), 10.0))  # a shift of -10: ReLU6 gives 0
    assert _placement.shifted(f, x, ("relu6",)) == []


def test_extract_warns_and_names_the_site_to_score():
    f, x = _block()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        subnet.extract(f, x, sites="relu6", key=jax.random.key(2), steps=0, finetune_steps=0,
                       fidelity=0.0)
    [message] = [str(w.message) for w in caught if "still feed constants" in str(w.message)]
    assert "depthwise" in message and "(here ['relu6_1'])" in message
    assert "BatchNorm outputs" not in message
    np.testing.assert_allclose(float(message.split("up to ")[1].split(" ")[0]), 1.5)
