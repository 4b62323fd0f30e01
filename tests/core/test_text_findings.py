"""Text models through the kernel: submodule methods other than ``__call__`` under the NNX and
Equinox adapters (a ``from_embeddings`` entry point, ``nnx.Embed.attend`` for tied weights),
and the batch axis followed through an embedding lookup of token ids (a gather from a table)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain as jp
from jaxplain import attribution as A


class _Inner(nnx.Module):
    def __init__(self, rngs):
        self.tok = nnx.Embed(20, 8, rngs=rngs)
        self.head = nnx.Linear(8, 2, rngs=rngs)
        self.classes = 2

    def from_embeddings(self, e):
        return self.head(jax.nn.relu(e).mean(1))

    def __call__(self, ids):
        return self.from_embeddings(self.tok(ids))


class _FromEmbeddings(nnx.Module):  # explain the embeddings through the inner entry point
    def __init__(self, rngs):
        self.m = _Inner(rngs)

    def __call__(self, e):
        assert self.m.classes == 2 and self.m.tok.embedding.shape == (20, 8)  # plain attributes
        return self.m.from_embeddings(e) + self.m.head(e[:, 0])


class _Tied(nnx.Module):  # logits = the embedding table's attend, a tied head
    def __init__(self, rngs):
        self.tok = nnx.Embed(20, 8, rngs=rngs)

    def __call__(self, e):
        return self.tok.attend(jax.nn.relu(e).mean(1))


class _EInner(eqx.Module):
    lin: eqx.nn.Linear

    def from_embeddings(self, e):  # (tokens, features) -> (classes,)
        return self.lin(jax.nn.relu(e).mean(0))

    def __call__(self, ids):  # the ids path, unused here (a module without one is not wrapped)
        raise NotImplementedError


class _EFromEmbeddings(eqx.Module):
    m: _EInner

    def __call__(self, e):
        return self.m.from_embeddings(e)


def _names(f, x):
    return {s.name for s in jp.sites(f, x)}


def test_nnx_submodule_methods_run_and_name_their_sites_under_the_submodule():
    e = jax.random.normal(jax.random.key(0), (3, 5, 8))
    model = _FromEmbeddings(nnx.Rngs(0))
    f = jp.as_function(model)
    np.testing.assert_allclose(f(e), model(e), rtol=1e-6)
    assert {"m", "m/head", "m/relu"} <= _names(f, e)
    _, got = jp.capture(f, "m/relu")(e)
    np.testing.assert_allclose(got["m/relu"], jax.nn.relu(e), rtol=1e-6)

    tied = _Tied(nnx.Rngs(1))
    g = jp.as_function(tied)
    np.testing.assert_allclose(g(e), tied(e), rtol=1e-6)
    assert "tok" in _names(g, e)  # attend's product, under the embedding's scope


def test_equinox_submodule_methods_run_and_name_their_sites_under_the_submodule():
    e = jax.random.normal(jax.random.key(0), (3, 5, 8))
    model = _EFromEmbeddings(_EInner(eqx.nn.Linear(8, 2, key=jax.random.key(1))))
    f = jp.as_function(model)
    np.testing.assert_allclose(f(e), jax.vmap(model)(e), rtol=1e-6)
    assert {"m", "m/lin", "m/relu"} <= _names(f, e)


class _NNXIds(nnx.Module):
    def __init__(self, rngs):
        self.tok = nnx.Embed(20, 8, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=8, decode=False, rngs=rngs)
        self.head = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, ids):
        h = self.tok(ids)
        return self.head((h + self.attn(h, h, h)).mean(1))


class _EqxIds(eqx.Module):  # per example: ids (tokens,) -> logits
    embed: eqx.nn.Embedding
    proj: eqx.nn.Linear  # no bias: vmapped over tokens, W @ x keeps the batch in the middle
    head: eqx.nn.Linear

    def __call__(self, ids):
        h = jax.nn.relu(jax.vmap(self.proj)(jax.vmap(self.embed)(ids)))
        return self.head(h.mean(0))


_TABLE = jax.random.normal(jax.random.key(2), (20, 8))
_W = jax.random.normal(jax.random.key(3), (8, 8))


def _time_major(lookup):
    """A plain model that runs time-major after the lookup: ``(tokens, batch, features)``."""
    def f(ids):
        h = jnp.swapaxes(lookup(ids), 0, 1)
        return jax.nn.relu(h @ _W).mean(0)[:, :2]
    return f


def _cases():
    eqx_model = _EqxIds(eqx.nn.Embedding(20, 8, key=jax.random.key(0)),
                        eqx.nn.Linear(8, 8, use_bias=False, key=jax.random.key(1)),
                        eqx.nn.Linear(8, 2, key=jax.random.key(2)))
    return {
        "nnx": (jp.as_function(_NNXIds(nnx.Rngs(0))), "attn/softmax"),
        "equinox": (jp.as_function(eqx_model), "relu"),
        "index": (_time_major(lambda ids: _TABLE[ids]), "relu"),
        "take": (_time_major(lambda ids: jnp.take(_TABLE, ids, axis=0)), "relu"),
    }


@pytest.mark.parametrize("kind", ["nnx", "equinox", "index", "take"])
def test_sites_after_an_embedding_lookup_put_the_batch_first(kind):
    f, name = _cases()[kind]
    ids = jnp.array([[1, 5, 7, 2, 0, 0], [1, 4, 3, 9, 8, 6], [3, 3, 2, 1, 0, 4]])
    site = {s.name: s for s in jp.sites(f, ids)}[name]
    _, got = jp.capture(f, name)(ids)
    assert got[name].shape == site.shape and site.shape[0] == len(ids)
    for k in range(len(ids)):  # each row is that example's own capture
        _, one = jp.capture(f, name)(ids[k:k + 1])
        np.testing.assert_allclose(got[name][k:k + 1], one[name], rtol=1e-5, atol=1e-6)


def test_attention_rollout_takes_token_ids_of_an_nnx_model():
    f, _ = _cases()["nnx"]
    ids = jnp.array([[1, 5, 7, 2, 0, 0], [1, 4, 3, 9, 8, 6]])
    rollout = A.attention_rollout(f, ids)
    assert rollout.shape == (2, 6, 6)
    np.testing.assert_allclose(rollout[1:], A.attention_rollout(f, ids[1:]), rtol=1e-5)
