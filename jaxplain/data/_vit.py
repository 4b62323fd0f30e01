"""A small vision transformer for the 8x8 digits: the embedded default for transformer methods."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

#: Bumped whenever the architecture or the training recipe changes; it invalidates checkpoints.
VIT_VERSION = 1
PATCH = 2  # 2x2 patches: 16 tokens of 4 pixels


class EncoderBlock(nn.Module):
    """Pre-LayerNorm encoder block: ``h + attn(ln(h))``, then ``h + mlp(ln(h))`` (ReLU MLP)."""

    width: int = 32
    heads: int = 4

    @nn.compact
    def __call__(self, h: Float[Array, "b t d"], _=None):
        a = nn.LayerNorm(use_bias=False, name="ln_attn")(h)
        h = h + nn.MultiHeadDotProductAttention(self.heads, use_bias=False, name="attn")(a)
        m = nn.LayerNorm(use_bias=False, name="ln_mlp")(h)
        m = nn.Dense(2 * self.width, use_bias=False, name="up")(m)
        return h + nn.Dense(self.width, use_bias=False, name="down")(nn.relu(m)), None


class DigitsViT(nn.Module):
    """``(batch, 8, 8, 1)`` images to ``(batch, 10)`` logits through 16 patch tokens.

    Each 2x2 patch is embedded by weights of its own position (so no additive position code
    is needed), two :class:`EncoderBlock` s run as one ``nn.scan`` over stacked parameters, and
    the mean token feeds the head. No layer has a bias, so the network is positively
    homogeneous once its attention weights and LayerNorm scales are fixed, and conservative
    propagation sums to the logit exactly. Sites: ``embed``, ``blocks/0/attn/softmax``
    (``(batch, 4, 16, 16)``), ..., ``blocks/1``, ``head``.
    """

    width: int = 32
    heads: int = 4
    depth: int = 2

    @nn.compact
    def __call__(self, x: Float[Array, "b 8 8 1"]) -> Float[Array, "b 10"]:
        b, height, width, c = x.shape
        rows, cols = height // PATCH, width // PATCH
        patches = x.reshape(b, rows, PATCH, cols, PATCH, c).transpose(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(b, rows * cols, PATCH * PATCH * c)
        embedding = self.param("embed", nn.initializers.lecun_normal(batch_axis=(0,)),
                               (rows * cols, PATCH * PATCH * c, self.width))
        with_scope = nn.scan(EncoderBlock, variable_axes={"params": 0},
                             split_rngs={"params": True}, length=self.depth)
        with jax.named_scope("embed"):
            h = jnp.einsum("btk,tkd->btd", patches, embedding)
        h, _ = with_scope(self.width, self.heads, name="blocks")(h, None)
        h = nn.LayerNorm(use_bias=False, name="ln_out")(h)
        return nn.Dense(10, use_bias=False, name="head")(h.mean(axis=1))
