"""Attention rollout and gradient-weighted rollout against float64 transcriptions of the papers'
formulas, on attention maps recorded by a hand-written forward pass."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain.attribution import attention_rollout, gradient_weighted_rollout

HEADS, E, D, TOKENS, LAYERS = 2, 3, 6, 5, 3
W = jax.random.normal(jax.random.key(0), (LAYERS, 4, HEADS, D, E)) / np.sqrt(D)
HEAD = jax.random.normal(jax.random.key(1), (D, 4))


def forward(x, deltas=None, record=None):
    """Three multi-head self-attention layers with residuals; ``deltas`` are added to the
    attention weights, ``record`` collects them."""
    h = x
    for layer, (wq, wk, wv, wo) in enumerate(W):
        q, k, v = (jnp.einsum("btd,hde->bhte", h, w) for w in (wq, wk, wv))
        p = jax.nn.softmax(jnp.einsum("bhte,bhse->bhts", q, k) / np.sqrt(E))
        if record is not None:
            record.append(p)
        if deltas is not None:
            p = p + deltas[layer]
        h = h + jnp.einsum("bhts,bhse,hde->btd", p, v, wo)
    return h.mean(axis=1) @ HEAD


def model(x):
    return forward(x)


X = jax.random.normal(jax.random.key(2), (3, TOKENS, D))
TARGET = jnp.array([0, 3, 1])


def recorded(x):
    maps = []
    forward(x, record=maps)
    return [np.asarray(p, np.float64) for p in maps]


def reference_rollout(x, residual, fuse):
    result = None
    for p in recorded(x):
        a = (1 - residual) * fuse(p, axis=1) + residual * np.eye(TOKENS)
        a = a / a.sum(axis=-1, keepdims=True)
        result = a if result is None else a @ result
    return result


def reference_gradient_rollout(x, target):
    zeros = [jnp.zeros((x.shape[0], HEADS, TOKENS, TOKENS))] * LAYERS
    grads = jax.grad(lambda d: jnp.take_along_axis(forward(x, d), target[:, None], 1).sum())(zeros)
    r = np.broadcast_to(np.eye(TOKENS), (x.shape[0], TOKENS, TOKENS))
    for p, g in zip(recorded(x), grads):
        r = r + np.maximum(np.asarray(g, np.float64) * p, 0).mean(axis=1) @ r
    return r


def test_the_attention_sites_are_found_in_layer_order():
    assert jp.attribution.attention_sites(model, X) == ("softmax", "softmax_1", "softmax_2")


@pytest.mark.parametrize("residual, heads, fuse", [(0.5, "mean", np.mean), (0.3, "max", np.max),
                                                   (0.0, "min", np.min)])
def test_rollout_matches_the_formula(residual, heads, fuse):
    got = attention_rollout(model, X, residual=residual, heads=heads)
    np.testing.assert_allclose(got, reference_rollout(X, residual, fuse), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=1e-5)


def test_rollout_through_residuals_only_is_the_identity():
    np.testing.assert_allclose(attention_rollout(model, X, residual=1.0),
                               np.broadcast_to(np.eye(TOKENS), (3, TOKENS, TOKENS)), atol=1e-7)


def test_gradient_weighted_rollout_matches_the_formula():
    got = gradient_weighted_rollout(model, X, TARGET)
    np.testing.assert_allclose(got, reference_gradient_rollout(X, TARGET), rtol=1e-4, atol=1e-6)
    other = gradient_weighted_rollout(model, X, (TARGET + 1) % 4)
    assert not np.allclose(got, other)  # class-specific


def test_jit_and_vmap_agree_with_eager():
    eager = gradient_weighted_rollout(model, X, TARGET)
    jitted = jax.jit(lambda x, t: gradient_weighted_rollout(model, x, t))(X, TARGET)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-7)
    mapped = jax.vmap(lambda xi: attention_rollout(model, xi[None])[0])(X)
    np.testing.assert_allclose(mapped, attention_rollout(model, X), rtol=1e-5, atol=1e-7)


class Block(nn.Module):
    @nn.compact
    def __call__(self, h, _):
        h = h + nn.MultiHeadDotProductAttention(num_heads=2, name="attn")(nn.LayerNorm()(h))
        return h + nn.Dense(D)(nn.relu(nn.Dense(12)(nn.LayerNorm()(h)))), None


class ScannedEncoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        blocks = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=2)
        h, _ = blocks(name="blocks")(x, None)
        return nn.Dense(4, name="head")(h.mean(axis=1))


def test_a_scanned_flax_encoder():
    encoder = ScannedEncoder()
    f = jp.as_function(encoder, encoder.init(jax.random.key(3), X))
    names = jp.attribution.attention_sites(f, X)
    assert names == ("blocks/0/attn/softmax", "blocks/1/attn/softmax")
    _, maps = jp.capture(f, list(names))(X)
    expected = None
    for name in names:
        a = 0.5 * np.asarray(maps[name], np.float64).mean(axis=1) + 0.5 * np.eye(TOKENS)
        expected = a if expected is None else a @ expected
    np.testing.assert_allclose(attention_rollout(f, X), expected, rtol=1e-5, atol=1e-6)
    relevance = gradient_weighted_rollout(f, X, TARGET)
    assert np.all(np.asarray(relevance) >= np.eye(TOKENS) - 1e-6)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="found no attention weights"):
        attention_rollout(lambda x: jax.nn.relu(x).mean(axis=1), X)
    with pytest.raises(ValueError, match="heads must be one of"):
        attention_rollout(model, X, heads="median")
    with pytest.raises(ValueError, match=r"residual must be in \[0, 1\]"):
        attention_rollout(model, X, residual=1.5)
    with pytest.raises(ValueError, match="Unknown site"):
        gradient_weighted_rollout(model, X, TARGET, sites="attn")
    tanh_model = lambda x: jnp.tanh(x).mean(axis=1) @ HEAD  # noqa: E731
    with pytest.raises(ValueError, match="attention weights must be"):
        attention_rollout(tanh_model, X, sites="tanh")
