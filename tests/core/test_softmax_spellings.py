"""Softmaxes JAX writes out in other ways are found as sites: with a ``where=`` mask, and as
``jax.nn.dot_product_attention`` (which Flax NNX's attention calls) computes them."""

import jax
import jax.numpy as jnp
import pytest

import jaxplain as jp
from jaxplain.attribution import attention_rollout, conservative_propagation

D, HEADS, T = 4, 2, 5
W = jax.random.normal(jax.random.key(0), (3, D, HEADS, D)) * 0.5
HEAD = jax.random.normal(jax.random.key(1), (HEADS * D, 3))
CAUSAL = jnp.tril(jnp.ones((T, T), bool))
X = jax.random.normal(jax.random.key(2), (2, T, D))


def _qkv(x):
    return [jnp.einsum("btd,dhk->bthk", x, w) for w in W]


def _pooled(o):
    return o.reshape(o.shape[0], o.shape[1], -1).mean(1) @ HEAD


def fused(x):
    """Bias-free attention through ``jax.nn.dot_product_attention``."""
    return _pooled(jax.nn.dot_product_attention(*_qkv(x)))


def written(x, mask=None):
    """The same attention written out with ``jax.nn.softmax``."""
    q, k, v = _qkv(x)
    s = jnp.einsum("bthk,bshk->bhts", q, k) / jnp.sqrt(D)
    if mask is not None:
        s = jnp.where(mask, s, -1e9)
    return _pooled(jnp.einsum("bhts,bshk->bthk", jax.nn.softmax(s), v))


def masked(x):
    """Causal attention with the mask given to the softmax."""
    q, k, v = _qkv(x)
    s = jnp.einsum("bthk,bshk->bhts", q, k) / jnp.sqrt(D)
    return _pooled(jnp.einsum("bhts,bshk->bthk", jax.nn.softmax(s, where=CAUSAL), v))


def _softmax_sites(f):
    return [s for s in jp.sites(f, X) if s.op == "softmax"]


@pytest.mark.parametrize("f,shape", [(fused, (2, 1, HEADS, T, T)), (masked, (2, HEADS, T, T))])
def test_the_softmax_is_a_site_batch_first(f, shape):
    (site,) = _softmax_sites(f)
    assert site.shape == shape
    _, acts = jp.capture(f, site.name)(X)
    rows = acts[site.name].sum(-1)
    assert jnp.allclose(rows, 1.0, atol=1e-6)


def test_the_fused_attention_weights_are_the_written_out_ones():
    (a,), (b,) = _softmax_sites(fused), _softmax_sites(written)
    wa = jp.capture(fused, a.name)(X)[1][a.name]
    wb = jp.capture(written, b.name)(X)[1][b.name]
    assert jnp.allclose(wa[:, 0], wb, atol=1e-6)


@pytest.mark.parametrize("f", [fused, masked, written])
def test_conservative_propagation_holds_them_and_conserves(f):
    # without the softmax held constant the sum misses the logit (the model is not linear)
    a = conservative_propagation(f, X, 1)
    assert jnp.allclose(a.sum((1, 2)), f(X)[:, 1], atol=1e-5)


def test_the_masked_softmax_is_held_constant_too():
    a = conservative_propagation(masked, X, 0)
    b = conservative_propagation(lambda x: written(x, CAUSAL), X, 0)
    assert jnp.allclose(a, b, atol=1e-5)


def test_rollout_reads_the_fused_attention_with_its_head_axes_fused():
    assert jnp.allclose(attention_rollout(fused, X), attention_rollout(written, X), atol=1e-6)
