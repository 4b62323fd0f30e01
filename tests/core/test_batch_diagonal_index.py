"""Per-example indexing that spells the batch axis as an ``iota`` (``h[jnp.arange(n), pos]``,
``.at[jnp.arange(n)[:, None], idx]``): each example reads or writes its own row, so the batch
is not mixed and its axis is kept (:func:`jaxplain.core.mixes_batch`)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution
from jaxplain.core import mixes_batch

N, T, F, H = 4, 5, 3, 8
_K = jax.random.split(jax.random.key(0), 3)
W1, W2 = jax.random.normal(_K[0], (F, H)), jax.random.normal(_K[1], (H, 2))
X = jax.random.normal(_K[2], (N, T, F))
POS = np.array([4, 2, 3, 1])  # each example's last token
IDX = np.array([[0, 2, 1], [1, 1, 3], [4, 0, 2], [3, 3, 0]])


def last_token(x):  # (n, T, F) -> (n, 2): last-token pooling
    h = jax.nn.relu(x @ W1)
    pos = jnp.arange(x.shape[0]) % T  # x's and the baselines' batch alike
    return jax.nn.relu(h[jnp.arange(x.shape[0]), pos] @ W2) @ jnp.ones((2, 2))


def rows_second(x):  # the gathered rows land on axis 1: (2, n, H), presented batch first
    h = jax.nn.relu(x @ W1)
    g = jax.nn.relu(h[jnp.arange(x.shape[0])[None, :], np.stack([POS, POS - 1])])
    return g.sum(0) @ W2


def _truly_mixes(f, x) -> bool:
    jac = jax.jacobian(f)(x).reshape(x.shape[0], -1, x.shape[0], x[0].size)
    return bool(np.abs(jac * (1 - np.eye(x.shape[0]))[:, None, :, None]).sum() > 0)


_X2 = X[..., 0]
SPELLINGS = {
    "arange, pos": (lambda x: x[jnp.arange(N), POS] * 2.0, False),
    "np.arange, pos": (lambda x: x[np.arange(N), POS] * 2.0, False),
    "int8 arange, pos": (lambda x: x[jnp.arange(N, dtype=jnp.int8), POS] * 2.0, False),
    "arange[:, None], idx": (lambda x: x[jnp.arange(N)[:, None], IDX] * 2.0, False),
    "scatter-add at arange[:, None], idx": (
        lambda x: jnp.zeros((N, T)).at[jnp.arange(N)[:, None], IDX].add(x[:, :3]) * 2.0, False),
    "set at arange, pos": (lambda x: x.at[jnp.arange(N), POS].set(0.0) * 2.0, False),
    "reversed arange, pos": (lambda x: x[jnp.arange(N)[::-1], POS] * 2.0, True),
    "permutation, pos": (lambda x: x[np.array([1, 0, 3, 2]), POS] * 2.0, True),
    "arange + 1 mod n, pos": (lambda x: x[(jnp.arange(N) + 1) % N, POS] * 2.0, True),
    "x[idx] rows": (lambda x: x[np.array([3, 2, 1, 0])] * 2.0, True),
    "scatter at reversed arange": (
        lambda x: jnp.zeros((N, T)).at[jnp.arange(N)[::-1, None], IDX].add(x[:, :3]), True),
}


@pytest.mark.parametrize("name", SPELLINGS)
def test_mixes_batch_agrees_with_the_jacobian(name):
    f, mixes = SPELLINGS[name]
    assert _truly_mixes(f, _X2) == mixes
    assert mixes_batch(f, _X2) == mixes  # the arange spellings were reported as mixing


def test_last_token_pooling_warns_nothing_and_sums_to_the_gap():
    assert not mixes_batch(last_token, X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # was a BatchMixingWarning
        a = attribution.deeplift(last_token, X, 0)
    gap = last_token(X)[:, 0] - last_token(jnp.zeros_like(X))[:, 0]
    np.testing.assert_allclose(a.sum((1, 2)), gap, rtol=1e-4, atol=1e-4)


def test_the_gathered_rows_are_presented_batch_first():
    assert not mixes_batch(rows_second, X)
    site = {s.name: s for s in jp.sites(rows_second, X)}["relu_1"]
    assert site.shape == (N, 2, H)  # was (2, 4, 8): the batch axis was lost
    _, got = jp.capture(rows_second, "relu_1")(X)
    h = jax.nn.relu(X @ W1)
    want = jax.nn.relu(jnp.stack([h[jnp.arange(N), POS], h[jnp.arange(N), POS - 1]], 1))
    np.testing.assert_allclose(got["relu_1"], want, rtol=1e-6)
