"""Bit-packed boolean columns: one uint32 word holds 32 rows (row t -> word t // 32, bit t % 32)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax


def num_words(n: int, multiple: int = 1) -> int:
    """Words per column for ``n`` rows, rounded up to a multiple (the number of devices)."""
    words = -(-n // 32)
    return -(-max(words, 1) // multiple) * multiple


def pack(columns: np.ndarray, words: int) -> np.ndarray:
    """Pack a bool matrix ``(n, d)`` column-wise into uint32 ``(d, words)``; padding rows are 0."""
    n, d = columns.shape
    padded = np.zeros((words * 32, d), dtype=bool)
    padded[:n] = columns
    packed = np.packbits(padded.T, axis=1, bitorder="little")  # (d, words * 4) uint8
    return np.ascontiguousarray(packed).view("<u4").astype(np.uint32)


def unpack(words: np.ndarray, n: int) -> np.ndarray:
    """Inverse of ``pack`` for one column ``(words,)`` or many ``(d, words)`` -> bool rows."""
    words = np.ascontiguousarray(np.asarray(words, dtype="<u4"))
    bits = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")
    return bits[..., :n].astype(bool)


def popcount_sum(x, axis=-1):
    """Number of set bits of a uint32 array summed over ``axis`` (int32, exact below 2^31)."""
    return jnp.sum(lax.population_count(x).astype(jnp.int32), axis=axis)
