"""Sums of several input-dependent terms are LRP places (the Norm rule,
``R_i = z_i * pullback(R / stab(y))``): a reduce_sum over any axes but the batch, a scatter-add
(``segment_sum``) and a cumulative sum. So every spelling of the same linear map conserves and
agrees with its einsum spelling (before: a segmentation net's region sum gave 7-31 for 1, a
``segment_sum`` graph net 1.14-1.54 and a ``cumsum`` 2.6-4.4), while the sums that are
statistics of a normalisation (a LayerNorm's mean and variance, a softmax's total) keep their
plain gradient, and sites do not change. A composite's `first` that applies to no layer warns."""

import warnings

import equinox
import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution as A
from jaxplain import lrp as L
from jaxplain.core._capture import program_of

_RNG = np.random.default_rng(0)
_K1 = jnp.asarray(_RNG.normal(size=(3, 3, 1, 4)), jnp.float32)
_K2 = jnp.asarray(_RNG.normal(size=(1, 1, 4, 3)), jnp.float32)
_MASK = jnp.zeros((6, 6)).at[1:4, 1:4].set(1.0)


def _conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _seg(x):
    """A bias-free segmentation net: (n, 6, 6, 1) -> (n, 6, 6, 3) class maps."""
    return _conv(jax.nn.relu(_conv(x, _K1)), _K2)


# The trial's spellings of "class 0 summed over the mask", and over the whole map.
_REGION = {
    "[...,0:1]*mask, sum": lambda z: (_seg(z)[..., 0:1] * _MASK[None, :, :, None]).sum((1, 2)),
    "[...,0]*mask, sum": lambda z: (_seg(z)[..., 0] * _MASK).sum((1, 2))[:, None],
    "*mask, sum, [:,0:1]": lambda z: (_seg(z) * _MASK[None, :, :, None]).sum((1, 2))[:, 0:1],
    "einsum": lambda z: jnp.einsum("nhw,hw->n", _seg(z)[..., 0], _MASK)[:, None],
    "[...,0]*mask, sum(2).sum(1)": lambda z: (_seg(z)[..., 0] * _MASK).sum(2).sum(1)[:, None],
}
_WHOLE = {
    "[...,0:1].sum": lambda z: _seg(z)[..., 0:1].sum((1, 2)),
    "[...,0].sum": lambda z: _seg(z)[..., 0].sum((1, 2))[:, None],
    "[...,0].mean": lambda z: _seg(z)[..., 0].mean((1, 2))[:, None],
    "reshape, sum": lambda z: _seg(z)[..., 0].reshape(z.shape[0], -1).sum(1, keepdims=True),
}
_X = jnp.asarray(_RNG.random((2, 6, 6, 1)), jnp.float32)


@pytest.mark.parametrize("spellings", [_REGION, _WHOLE], ids=["region", "whole map"])
def test_every_spelling_of_a_region_sum_conserves_and_agrees(spellings):
    got = {name: A.lrp(g, _X, 0, rules=L.Epsilon(1e-9)) for name, g in spellings.items()}
    first = next(iter(got.values()))
    for name, r in got.items():
        np.testing.assert_allclose(r.sum((1, 2, 3)), 1.0, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(r, first, atol=1e-5, err_msg=name)


# A graph: 5 nodes, 8 directed edges; messages from SRC summed at DST.
_N, _F = 5, 3
_SRC = np.array([0, 1, 2, 3, 4, 0, 0, 1])
_DST = np.array([1, 2, 3, 4, 0, 2, 0, 1])
_ADJ = np.zeros((_N, _N), np.float32)
np.add.at(_ADJ, (_DST, _SRC), 1.0)
_KEYS = jax.random.split(jax.random.key(0), 3)
_W1 = jax.random.normal(_KEYS[0], (_F, 4))
_W2 = jax.random.normal(_KEYS[1], (4, 2))
_XG = jax.random.normal(_KEYS[2], (4, _N, _F))


def _head(h):
    return jax.nn.relu(h @ _W1).mean(1) @ _W2


def _segment_sum(x):
    return jax.vmap(lambda m: jax.ops.segment_sum(m, _DST, num_segments=_N))(x[:, _SRC])


def _per_example_edges(x):  # the same edges given per example: a scatter the indices batch
    dst = np.tile(_DST, (x.shape[0], 1))
    return jax.vmap(lambda m, d: jax.ops.segment_sum(m, d, num_segments=_N))(x[:, _SRC], dst)


_GRAPHS = [
    ("segment_sum", lambda x: _head(_segment_sum(x)),
     lambda x: _head(jnp.einsum("ij,bjf->bif", _ADJ, x))),
    ("segment_sum, per-example edges", lambda x: _head(_per_example_edges(x)),
     lambda x: _head(jnp.einsum("ij,bjf->bif", _ADJ, x))),
    ("cumsum", lambda x: _head(jnp.cumsum(x, axis=1)),
     lambda x: _head(jnp.einsum("ij,bjf->bif", np.tril(np.ones((_N, _N), np.float32)), x))),
]


@pytest.mark.parametrize("name, f, einsum", _GRAPHS, ids=[g[0] for g in _GRAPHS])
def test_scatter_add_and_cumsum_conserve_as_their_einsum_spelling(name, f, einsum):
    np.testing.assert_allclose(f(_XG), einsum(_XG), atol=1e-5)
    got = A.lrp(f, _XG, 0, rules=L.Epsilon(1e-9))
    np.testing.assert_allclose(got.sum((1, 2)), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, A.lrp(einsum, _XG, 0, rules=L.Epsilon(1e-9)), atol=1e-5)


def _pools(f, x):
    return sorted(program_of(f, x, unrolled=True, warn=False)[1].pools.values())


def _layer_norm(h):
    mean = h.mean(-1, keepdims=True)
    var = ((h - mean) ** 2).mean(-1, keepdims=True)
    return (h - mean) * jax.lax.rsqrt(var + 1e-5)


def _softmax(h):
    e = jnp.exp(h - jax.lax.stop_gradient(h.max(-1, keepdims=True)))
    return e / e.sum(-1, keepdims=True)


def test_the_sums_of_normalisations_are_no_places_and_sites_do_not_change():
    w = jax.random.normal(jax.random.key(1), (3, 3))

    def f(x):  # (n, L, 3): LayerNorm, softmax and flax's E[x^2] - E[x]^2, then a feature sum
        h = _softmax(_layer_norm(x @ w))
        mu, mu2 = h.mean(-1, keepdims=True), (h * h).mean(-1, keepdims=True)
        h = (h - mu) * jax.lax.rsqrt(jnp.maximum(mu2 - mu * mu, 0.0) + 1e-5)
        return h.sum(-1)

    x = jax.random.normal(jax.random.key(2), (2, 4, 3))
    assert _pools(f, x) == ["reduce_sum"]              # the head's sum only
    assert [s.name for s in jp.sites(f, x)] == ["linear"]
    ln = flax.linen.LayerNorm()
    variables = ln.init(jax.random.key(3), x)
    assert _pools(lambda v: ln.apply(variables, v), x) == []
    assert _pools(jax.vmap(jax.vmap(equinox.nn.LayerNorm(3))), x) == []


def test_sums_that_mix_the_examples_or_hold_one_term_are_no_places():
    x = jnp.ones((4, 3))
    assert _pools(lambda v: jnp.zeros((2, 3)).at[np.array([0, 1, 0, 1])].add(v), x) == []
    assert _pools(lambda v: jnp.cumsum(v, axis=0), x) == []
    assert _pools(lambda v: v[:, :1].sum(1), x) == []
    assert _pools(lambda v: (v > 0).sum(1), x) == []


def test_a_first_rule_that_applies_to_no_layer_warns():
    seg = lambda x: _head(_segment_sum(x))
    dense = lambda x: _head(jnp.einsum("ij,bjf->bif", _ADJ, x))
    with pytest.warns(UserWarning, match="no linear layer reads the input"):
        A.lrp(seg, _XG, 0, rules=L.EpsilonPlusFlat())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A.lrp(dense, _XG, 0, rules=L.EpsilonPlusFlat())  # Flat lands on the adjacency matmul
        A.lrp(seg, _XG, 0, rules=L.Epsilon())


def test_a_scatter_add_at_per_example_rows_conserves_as_vmapped_segment_sum():
    # zeros.at[arange(n)[:, None], idx].add(h): each example's row of the indices writes its
    # own row (LRP summed to 3, the segment size, before).
    w = jax.random.normal(jax.random.key(0), (4, 6))
    idx = jnp.asarray(np.random.default_rng(0).integers(0, 3, (3, 6)))
    x = jax.random.uniform(jax.random.key(1), (3, 4))
    h = lambda z: jax.nn.relu(z @ w)  # noqa: E731
    rows = lambda z: jnp.zeros((3, 3)).at[jnp.arange(3)[:, None], idx].add(h(z))  # noqa: E731
    vmapped = lambda z: jax.vmap(lambda m, s: jax.ops.segment_sum(m, s, 3))(h(z), idx)  # noqa: E731
    np.testing.assert_allclose(rows(x), vmapped(x), rtol=1e-6)
    t = jnp.argmax(vmapped(x), -1)
    np.testing.assert_allclose(A.lrp(rows, x, t, rules=L.Epsilon(1e-9)),
                               A.lrp(vmapped, x, t, rules=L.Epsilon(1e-9)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(A.lrp(rows, x, t, rules=L.Epsilon(1e-9)).sum(1), 1.0, rtol=1e-5)
