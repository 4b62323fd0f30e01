"""Synthetic binary layers with planted rules under noise (spec §6, suggested validation)."""

from __future__ import annotations

import numpy as np


def planted(seed, *, n=1000, m_a=24, m_b=32, rules=3, destructive=0.1, additive=0.01,
            head_sizes=(1, 3), tail_sizes=(4, 8), support=(0.05, 0.2), p=(0.01, 0.2),
            on=0.9):
    """Return ``(d_a, d_b, truth)`` with truth a list of (head, tail) index tuples.

    Background items are independent Bernoulli(p_i), p_i ~ U(p); each rule's head items are
    all switched on in a random ``support`` fraction of rows; in every row containing the head
    each tail item is switched on with probability ``on``; then planted cells are flipped 1 -> 0
    with probability ``destructive`` and every 0 cell to 1 with probability ``additive``.
    Heads and tails of different rules are disjoint.
    """
    rng = np.random.default_rng(seed)
    d_a = rng.random((n, m_a)) < rng.uniform(*p, m_a)
    d_b = rng.random((n, m_b)) < rng.uniform(*p, m_b)
    heads_pool, tails_pool = rng.permutation(m_a), rng.permutation(m_b)
    truth, block = [], np.zeros_like(d_b)
    for _ in range(rules):
        h = int(rng.integers(head_sizes[0], head_sizes[1] + 1))
        t = int(rng.integers(tail_sizes[0], tail_sizes[1] + 1))
        if h > len(heads_pool) or t > len(tails_pool):
            raise ValueError(f"{rules} disjoint rules do not fit in {m_a} x {m_b} items")
        head, heads_pool = np.sort(heads_pool[:h]), heads_pool[h:]
        tail, tails_pool = np.sort(tails_pool[:t]), tails_pool[t:]
        rows = rng.random(n) < rng.uniform(*support)
        d_a[np.ix_(rows, head)] = True
        rows = d_a[:, head].all(1)
        cells = np.zeros_like(d_b)
        cells[np.ix_(rows, tail)] = rng.random((rows.sum(), t)) < on
        block |= cells
        truth.append((tuple(head.tolist()), tuple(tail.tolist())))
    d_b |= block
    d_b &= ~(block & (rng.random(d_b.shape) < destructive))
    d_a |= rng.random(d_a.shape) < additive
    d_b |= rng.random(d_b.shape) < additive
    return d_a, d_b, truth


def match(rule_set, truth):
    """For each planted rule, the found rule with the highest Jaccard on X u Y (or None)."""
    def items(head, tail):
        return {("a", int(i)) for i in head} | {("b", int(i)) for i in tail}

    found = [(tuple(r.head.tolist()), tuple(r.tail.tolist())) for r in rule_set.rules]
    out = []
    for head, tail in truth:
        best, score = None, 0.0
        for f_head, f_tail in found:
            x, y = items(head, tail), items(f_head, f_tail)
            jac = len(x & y) / len(x | y)
            if jac > score:
                best, score = (f_head, f_tail), jac
        out.append((best, score))
    return out
