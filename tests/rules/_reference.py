"""A slow, straightforward float64 NumPy transcription of the ExplaiNN code (spec §3), for tests.

Written independently of jaxplain.rules: exact regret series for every N, scipy's gammaln,
dense boolean arrays, one candidate at a time.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.special import gammaln

LN2 = math.log(2.0)


def universal(k):
    total, term = math.log2(2.865064), math.log2(k)
    while term > 0:
        total += term
        term = math.log2(term)
    return total


def lb(n, k):
    return float((gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)) / LN2)


@functools.lru_cache(maxsize=None)
def reg(n):
    if n == 0:
        return 0.0
    if n > 20000:  # the spec's asymptotic regime; keeps the reference fast
        return math.log2(math.sqrt(math.pi * n / 2) + 2 / 3 + math.sqrt(math.pi / (2 * n)) / 12
                         - 4 / (135 * n))
    term, total = 1.0, 1.0
    for k in range(1, n + 1):
        term *= (n - k + 1) / n
        total += term
        if term < 1e-300:
            break
    return math.log2(total)


def set_bits(m, k, kind="universal"):
    return universal(k) + lb(m, k) if kind == "universal" else lb(m, k) + reg(m)


def rule_bits(m_a, m_b, x, y, pairs=1, kind="universal"):
    return math.log2(pairs) + set_bits(m_a, x, kind) + set_bits(m_b, y, kind)


def usage(d_a, d_b, head, tail, k):
    rows = d_a[:, list(head)].all(1)
    hits = d_b[:, list(tail)].sum(1)
    return rows, rows & (hits >= k), hits


def tail_bits(d_a, d_b, head, tail, k, robust=True):
    rows, used, hits = usage(d_a, d_b, head, tail, k)
    t, u = int(rows.sum()), int(used.sum())
    bits = lb(t, u) + reg(t)
    if robust:
        z = int((len(tail) - hits[used]).sum())
        bits += lb(u * len(tail), z) + reg(u * len(tail))
    return bits


def total_length(layers, rules, robust=True, kind="universal"):
    """L(D, M) for two layers {'a', 'b'} and rules [(head, tail, k)] from 'a' to 'b'."""
    d_a, d_b = layers
    n = d_a.shape[0]
    cover = np.zeros_like(d_b)
    bits = [universal(len(rules) + 1)]
    for head, tail, k in rules:
        bits.append(rule_bits(d_a.shape[1], d_b.shape[1], len(head), len(tail), kind=kind))
        bits.append(tail_bits(d_a, d_b, head, tail, k, robust))
        _, used, _ = usage(d_a, d_b, head, tail, k)
        cover[np.ix_(used, list(tail))] = True
    for d, residual in ((d_a, d_a), (d_b, d_b & ~cover)):
        for c in residual.sum(0):
            bits.append(lb(n, int(c)) + reg(n))
    return math.fsum(bits)


def gain(d_a, d_b, cover, n_rules, head, tail, k, robust=True):
    """Delta L of adding (head -> tail, k) given the coverage of layer b (spec §3.5)."""
    n = d_a.shape[0]
    _, used, _ = usage(d_a, d_b, head, tail, k)
    if used.sum() == 0:
        return math.inf
    bits = universal(n_rules + 2) - universal(n_rules + 1)
    bits += rule_bits(d_a.shape[1], d_b.shape[1], len(head), len(tail))
    bits += tail_bits(d_a, d_b, head, tail, k, robust)
    residual = d_b & ~cover
    for y in tail:
        c = int(residual[:, y].sum())
        g = int(residual[used, y].sum())
        bits += lb(n, c - g) - lb(n, c)
    return bits


def best_rule(d_a, d_b, cover, n_rules, head, k_tail, robust=True, min_support=2):
    """The spec's step 2 for one head: rank tails, score every prefix and k, keep the best."""
    rows = d_a[:, list(head)].all(1)
    if rows.sum() < min_support:
        return math.inf, None, None
    co = (d_b & ~cover)[rows].sum(0)
    order = np.argsort(-co, kind="stable")[:k_tail]
    best = (math.inf, None, None)
    for j in range(1, len(order) + 1):
        tail = tuple(sorted(order[:j].tolist()))
        for k in (range(j, 0, -1) if robust else [j]):  # ties -> larger k, then shorter tail
            value = gain(d_a, d_b, cover, n_rules, head, tail, k, robust)
            if value < best[0]:
                best = (value, tail, k)
    return best
