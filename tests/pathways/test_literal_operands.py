"""A model whose trace takes a function of a literal (Flax's dot_product_attention scales by
``sqrt 8.0``) is analysed: the check for normalisers met the literal and raised
``TypeError: unhashable type`` (the pathways section of ``jaxplain explain`` on the ViT)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import pathways

W = jax.random.normal(jax.random.key(0), (8, 8))
V = jax.random.normal(jax.random.key(1), (8, 3))


def _flax_attention(x):  # (n, 4 tokens, 8)
    h = jax.nn.relu(x @ W)[:, :, None, :]
    return nn.dot_product_attention(h, h, h)[:, :, 0, :].mean(1) @ V


def _by_hand(x):
    h = jax.nn.relu(x @ W)
    weights = jax.nn.softmax(h @ jnp.swapaxes(h, 1, 2) * (1 / np.sqrt(8.0)), axis=-1)
    return (weights @ h).mean(1) @ V


def test_select_on_flax_attention_equals_the_hand_written_twin():
    x = jax.random.normal(jax.random.key(2), (4, 4, 8))
    np.testing.assert_allclose(_flax_attention(x), _by_hand(x), rtol=1e-5, atol=1e-6)
    t = jnp.argmax(_by_hand(x), -1)
    with pytest.warns(UserWarning, match="not piecewise linear"):  # the check ran: softmax
        got = pathways.select(_flax_attention, x, t, keep=0.2)["relu"]
    with pytest.warns(UserWarning, match="not piecewise linear"):
        want = pathways.select(_by_hand, x, t, keep=0.2)["relu"]
    assert got.shape == (4, 4, 8) and 0 < int(got.sum()) < got.size
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
