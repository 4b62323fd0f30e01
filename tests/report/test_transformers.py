"""The transformers section: on the embedded ViT for the demo, on the model itself when it has
attention layers, and a note otherwise."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

import jaxplain as jp
from jaxplain.report._transformers import demo_section


def test_demo_explains_the_digits_vit(demo_context, digits_vit):
    section = demo_section(demo_context)
    assert not section.failed and "digits ViT" in section.text
    assert "blocks/0/attn/softmax, blocks/1/attn/softmax" in section.text
    table, figure = section.items
    rows = {row[0]: row for row in table.rows}
    assert set(rows) == {"attention rollout", "gradient-weighted rollout",
                         "conservative propagation", "attnlrp", "gradient x input"}
    assert float(rows["conservative propagation"][2]) < 1e-4 < float(rows["gradient x input"][2])
    assert len(figure.png) > 1000


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
