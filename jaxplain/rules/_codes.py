"""Float64 code lengths (bits) of the ExplaiNN MDL code, on the host and on the device.

The primitives are the Grab/Premise family's (see docs/rules.md): the universal integer code
``L_N``, the index code ``LB(N, K) = log2 C(N, K)`` and the binomial NML regret ``Reg(N)``.
Host versions use Python's ``math.lgamma`` and exact float64 series; device versions run inside
``jax.enable_x64`` and use the same tables, so both sides agree to ~1e-9 bits.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
from jax.scipy.special import gammaln
import numpy as np

LN2 = math.log(2.0)
# Below this size the regret is the exact series; above it the asymptotic expansion of
# Ramanujan's Q-function, which is within 1e-12 bits there (checked in the tests).
REGRET_TABLE_SIZE = 4096
_LOG2_C0 = math.log2(2.865064)


def universal(k: int) -> float:
    """Rissanen's universal code for an integer ``k >= 1``: log2(c0) + log2 k + log2 log2 k + ...

    Only the positive terms are summed. ``universal(1) = 1.518567``.
    """
    if k < 1:
        raise ValueError(f"universal code needs k >= 1, got {k}")
    total, term = _LOG2_C0, math.log2(k)
    while term > 0:
        total += term
        term = math.log2(term)
    return total


def log_binomial(n: int, k: int) -> float:
    """``log2 C(n, k)`` in float64; 0 for k in {0, n}. Raises on k outside [0, n]."""
    n, k = int(n), int(k)
    if k < 0 or k > n:
        raise ValueError(f"log_binomial needs 0 <= k <= n, got n={n}, k={k}")
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / LN2


def _regret_series(n: int) -> float:
    if n == 0:
        return 0.0
    # sum_{k=0..n} n! / ((n-k)! n^k), each term a cumulative product of (1 - j/n).
    terms = np.exp(np.concatenate([[0.0], np.cumsum(np.log1p(-np.arange(n) / n))]))
    return math.log2(math.fsum(terms))


def _regret_asymptotic(n):
    """log2 of 1 + Ramanujan's Q(n), six terms; works on floats and jnp arrays."""
    xp = jnp if isinstance(n, jnp.ndarray) else np
    n = xp.asarray(n, dtype=xp.float64)
    s = (xp.sqrt(math.pi * n / 2) + 2.0 / 3.0 + xp.sqrt(math.pi / (2 * n)) / 12
         - 4.0 / (135 * n) + xp.sqrt(math.pi / (2 * n**3)) / 288 + 8.0 / (2835 * n**2))
    return xp.log2(s)


@functools.lru_cache(maxsize=1)
def regret_table() -> np.ndarray:
    """Exact ``Reg(N)`` for ``N = 0 .. REGRET_TABLE_SIZE`` (float64)."""
    return np.array([_regret_series(n) for n in range(REGRET_TABLE_SIZE + 1)])


def regret(n: int) -> float:
    """Binomial NML regret ``Reg(n) = log2 sum_k n!/((n-k)! n^k)`` in bits; ``Reg(0) = 0``."""
    n = int(n)
    if n < 0:
        raise ValueError(f"regret needs n >= 0, got {n}")
    if n <= REGRET_TABLE_SIZE:
        return float(regret_table()[n])
    return float(_regret_asymptotic(n))


def set_code(m: int, k: int, kind: str) -> float:
    """Bits to send which ``k`` of ``m`` items a rule's head or tail holds."""
    if kind == "universal":
        return universal(k) + log_binomial(m, k)
    return log_binomial(m, k) + regret(m)  # "premise": size implied by the regret term


@functools.lru_cache(maxsize=8)
def log2_factorial_table(n: int) -> np.ndarray:
    """``log2(N!)`` for ``N = 0 .. n`` from ``math.lgamma`` (float64)."""
    return np.array([math.lgamma(i + 1) for i in range(n + 1)]) / LN2


# ----------------------------------------------------------------------------------------------
# Device versions (call inside ``jax.enable_x64(True)``; arguments are integer arrays).


def lb_table(lf, n, k):
    """``log2 C(n, k)`` by a log-factorial table ``lf`` (n within the table)."""
    return lf[n] - lf[k] - lf[n - k]


def lb_lgamma(n, k):
    """``log2 C(n, k)`` by float64 lgamma, for n beyond the table."""
    n = n.astype(jnp.float64)
    k = k.astype(jnp.float64)
    return (gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)) / LN2


def regret_device(table, n):
    """``Reg(n)`` for integer arrays: exact table below REGRET_TABLE_SIZE, asymptotic above."""
    small = table[jnp.clip(n, 0, REGRET_TABLE_SIZE)]
    big = _regret_asymptotic(jnp.maximum(n, 1).astype(jnp.float64))
    return jnp.where(n <= REGRET_TABLE_SIZE, small, big)
