"""The transformers section: on the embedded ViT for the demo, on the model itself when it has
attention layers, and a note otherwise."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jp
from jaxplain.report._transformers import _token_map, demo_section


def test_demo_explains_the_digits_vit(demo_context, digits_vit):
    section = demo_section(demo_context)
    assert not section.failed and "digits ViT" in section.text
    assert "blocks/0/attn/softmax, blocks/1/attn/softmax" in section.text
    # it mean-pools: the section says it shows the mean row, on the 4x4 grid
    assert "mean output token: the logits read 16 of the 16 output tokens" in section.text
    assert "The 16 tokens are drawn on the 4x4 patch grid." in section.text
    table, figure = section.items
    rows = {row[0]: row for row in table.rows}
    assert set(rows) == {"attention rollout", "gradient-weighted rollout",
                         "conservative propagation", "attnlrp", "gradient x input"}
    assert float(rows["conservative propagation"][2]) < 1e-4 < float(rows["gradient x input"][2])
    assert len(figure.png) > 1000
    assert "each panel scaled to its own largest absolute value" in figure.caption


class Encoder(nn.Module):
    @nn.compact
    def __call__(self, x):  # (batch, 16) vectors as 16 one-feature tokens
        h = nn.Dense(8)(x[..., None])
        h = h + nn.MultiHeadDotProductAttention(num_heads=2, name="attn")(h)
        return nn.Dense(3)(h.mean(axis=1))


def test_a_user_transformer_is_explained_itself(demo_context):
    model = Encoder()
    x = jax.random.normal(jax.random.key(0), (6, 16))
    f = jp.as_function(model, model.init(jax.random.key(1), x))
    data = dataclasses.replace(demo_context.data, x_test=x, y_test=jnp.zeros(6, jnp.int32))
    section = demo_section(dataclasses.replace(demo_context, model=model, f=f, data=data))
    assert not section.failed and "the model" in section.text and "attn/softmax" in section.text
    assert len(section.items) == 2


def test_a_model_without_attention_gets_a_note(demo_context):
    mlp = lambda x: jax.nn.relu(x.reshape(x.shape[0], -1)) @ jnp.ones((64, 10))  # noqa: E731
    section = demo_section(dataclasses.replace(demo_context, model=mlp, variables=None, f=mlp))
    assert not section.failed and "no attention layers" in section.text and not section.items


class ClsViT(nn.Module):
    """2x2 patches of an 8x8 digit as 16 tokens after a [CLS] token; the head reads token 0."""

    pool: str = "cls"

    @nn.compact
    def __call__(self, x):
        p = nn.Conv(8, (2, 2), strides=(2, 2))(x).reshape(x.shape[0], 16, 8)
        cls = jnp.broadcast_to(self.param("cls", nn.initializers.normal(1.0), (1, 1, 8)),
                               (x.shape[0], 1, 8))
        h = jnp.concatenate([cls, p], axis=1)
        h = h + nn.MultiHeadDotProductAttention(num_heads=2, name="attn")(nn.LayerNorm()(h))
        return nn.Dense(10)(h[:, 0] if self.pool == "cls" else h.mean(axis=1))


def _section(demo_context, model):
    x = jnp.asarray(demo_context.data.x_test[:2])
    f = jp.as_function(model, model.init(jax.random.key(0), x))
    return demo_section(dataclasses.replace(demo_context, model=model, f=f)), f


def test_a_cls_vit_shows_the_cls_row_on_the_patch_grid(demo_context):
    section, f = _section(demo_context, ClsViT())
    assert not section.failed
    assert "shown is row 0" in section.text and "mean output token" not in section.text
    assert "drawn on the 4x4 patch grid, without token 0 (the [CLS] token the head reads)" \
        in section.text
    x = jnp.asarray(demo_context.data.x_test[:4])  # the section's quick-mode examples
    rollout = np.asarray(jp.attribution.attention_rollout(f, x))[:, 0]
    share = np.mean(rollout[:, 0] / rollout.sum(axis=1))  # rows sum to 1: token 0's share
    assert f"averages {share:.0%} (attention rollout)" in section.text
    # what is drawn: the 16 patch tokens of row 0 spread over their 2x2 pixels
    drawn = _token_map(rollout[0], (8, 8, 1))
    assert drawn.shape == (8, 8, 1)
    np.testing.assert_allclose(drawn[::2, ::2, 0], rollout[0, 1:].reshape(4, 4))


def test_a_mean_pooled_vit_says_it_shows_the_mean_row(demo_context):
    section, _ = _section(demo_context, ClsViT(pool="mean"))
    assert not section.failed
    assert "mean output token: the logits read 17 of the 17 output tokens" in section.text
    assert "without token 0 (taken for a [CLS] token" in section.text
