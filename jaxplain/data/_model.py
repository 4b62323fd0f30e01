"""The default model: a small residual CNN for the 8x8 digits."""

from __future__ import annotations

import flax.linen as nn
from jaxtyping import Array, Float

#: Bumped whenever the architecture or the training recipe changes; it invalidates checkpoints.
ARCHITECTURE_VERSION = 1


class ResidualBlock(nn.Module):
    """``relu(x + conv_b(relu(conv_a(x))))`` with two 3x3 convolutions of ``features`` channels.

    Its sites are ``conv_a``, ``relu``, ``conv_b``, ``add`` and ``relu_1`` (the block's output).
    """

    features: int = 16

    @nn.compact
    def __call__(self, x: Float[Array, "b h w c"]) -> Float[Array, "b h w c"]:
        h = nn.relu(nn.Conv(self.features, (3, 3), name="conv_a")(x))
        h = nn.Conv(self.features, (3, 3), name="conv_b")(h)
        return nn.relu(x + h)


class DigitsCNN(nn.Module):
    """The embedded default classifier: ``(batch, 8, 8, 1)`` images to ``(batch, 10)`` logits.

    conv1 (3x3, 16) -> relu -> block1 (:class:`ResidualBlock`) -> 2x2 average pool -> flatten
    -> fc1 (64) -> relu -> head (10). Its sites, as :func:`jaxplain.sites` names them:
    ``conv1, relu, block1/conv_a, block1/relu, block1/conv_b, block1/add, block1/relu_1
    (= block1), avg_pool, fc1, relu_1, head``.
    """

    @nn.compact
    def __call__(self, x: Float[Array, "b 8 8 1"]) -> Float[Array, "b 10"]:
        x = nn.relu(nn.Conv(16, (3, 3), name="conv1")(x))
        x = ResidualBlock(16, name="block1")(x)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(64, name="fc1")(x))
        return nn.Dense(10, name="head")(x)
