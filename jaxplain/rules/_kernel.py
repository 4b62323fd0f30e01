"""Device kernels of the rule search: head rows, tail ranking and batched candidate gains.

Every kernel works on bit-packed columns (``_bits``) with rows as the last (word) axis, so
sharding rows over devices shards that axis and the popcount sums become all-reduces. Shapes
are static per layer pair (candidate batches are padded), so nothing retraces during a search.
Call these inside ``jax.enable_x64(True)``: the gains are float64. The host reads the kernels'
results through :func:`fetch_ahead`: one wait per call, the next call already running.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxplain.rules import _codes
from jaxplain.rules._bits import popcount_sum

# The gain of a head without a valid rule: finite, so the kernel runs under jax_debug_infs; the
# host reads it as +inf.
NO_RULE = float(np.finfo(np.float64).max)


def fetch_ahead(items: Iterable, call: Callable[[Any], Any]) -> Iterator[tuple[Any, Any]]:
    """``(item, call(item) on the host)`` for each item in order, each call dispatched before the
    previous result is read.

    ``call`` dispatches device work and returns its (pytree of) device arrays without reading
    them; each result is then read with one ``jax.device_get`` (one wait for all its arrays),
    while the device already runs the next item's call. The pairs are those of calling and
    reading one item at a time, provided the items do not depend on earlier results (they are
    fixed before the first call).
    """
    pending = None
    for item in items:
        result = call(item)
        if pending is not None:
            yield pending[0], jax.device_get(pending[1])
        pending = item, result
    if pending is not None:
        yield pending[0], jax.device_get(pending[1])


@jax.jit
def head_rows(packed_head, heads):
    """Rows containing every head item: AND of ``packed_head[heads]`` -> ``(B, words)``.

    ``packed_head`` has one extra last row holding the valid-row mask; heads (int32
    ``(B, max_head)``) are padded with it. Compiled, so the column indices stay on the device.
    """
    rows = packed_head[heads[:, 0]]
    for h in range(1, heads.shape[1]):
        rows = rows & packed_head[heads[:, h]]
    return rows


@jax.jit
def cooccurrence(rows, packed):
    """``|rows_b & packed_y|`` for every candidate b and column y -> int32 ``(B, d)``."""
    return popcount_sum(rows[:, None, :] & packed[None, :, :])


def pair_counts(masks, columns, scan_words):
    """``|masks_bk & columns_bi|`` for all k, i -> int32 ``(B, K1, K2)``.

    ``scan_words=True`` accumulates over the word axis in a loop (fast on CPU, where the
    ``(B, K1, K2)`` counters vectorize); otherwise one broadcast-and-reduce (GPU/TPU).
    """
    if not scan_words:
        return popcount_sum(masks[:, :, None, :] & columns[:, None, :, :])

    def add(total, words):
        m, c = words
        return total + lax.population_count(m[:, :, None] & c[:, None, :]).astype(jnp.int32), None

    start = jnp.zeros(masks.shape[:2] + columns.shape[1:2], jnp.int32)
    return lax.scan(add, start, (jnp.moveaxis(masks, -1, 0), jnp.moveaxis(columns, -1, 0)))[0]


def tail_orders(rows, support, packed_tail, residual, residual_counts, log2_fact, regret_tab,
                k_tail, robust):
    """The two tail rankings of each head, by confidence and by one-item gain -> int32
    ``(2, B, K)``, the top ``k_tail`` items of each.

    For head rows ``rows`` ``(B, W)`` with ``support`` ``(B,)`` ones, let ``g_y`` be tail item
    y's uncovered ones in those rows, ``u_y`` its ones there and ``c_y`` its uncovered ones
    in all ``n`` rows. Confidence (the spec's step 2) ranks by ``g_y``, ties to the lower
    index. One-item gain ranks by the gain of the rule ``X -> {y}`` alone (k = 1: it uses the
    ``u_y`` rows, with no zero cells), less the terms every y shares::

        LB(|T_X|, u_y) + Reg(u_y) + LB(n, c_y - g_y) - LB(n, c_y)     (robust)
        LB(|T_X|, u_y) + LB(n, c_y - g_y) - LB(n, c_y)               (exact: no block code)

    smallest first, ties to the larger ``g_y``, then the lower index; items with ``u_y = 0``
    last. An item on in most rows anyway ranks high by confidence, one on in a few rows only
    (head rows) ranks high by lift; both rank late here, as covering them saves few bits.
    """
    n = log2_fact.shape[0] - 1
    co = cooccurrence(rows, residual)                                     # g_y (B, m_b)
    _, by_confidence = lax.top_k(co, k_tail)                              # ties: low index
    u = cooccurrence(rows, packed_tail).astype(jnp.int64)
    g = co.astype(jnp.int64)
    c = residual_counts.astype(jnp.int64)[None, :]
    sup = support.astype(jnp.int64)[:, None]
    alone = (_codes.lb_table(log2_fact, sup, u) + _codes.lb_table(log2_fact, n, c - g)
             - _codes.lb_table(log2_fact, n, c))
    if robust:
        alone = alone + _codes.regret_device(regret_tab, u)
    index = jnp.broadcast_to(jnp.arange(co.shape[1], dtype=jnp.int32), co.shape)
    _, _, by_gain = lax.sort((jnp.where(u > 0, alone, NO_RULE), -co, index), dimension=1,
                             num_keys=3)
    return jnp.stack([by_confidence, by_gain[:, :k_tail]])


@functools.partial(jax.jit, static_argnames=("robust", "min_support", "min_tail_frac",
                                             "scan_words", "tail_order"))
def score(packed_head, packed_tail, residual, residual_counts, heads, head_sizes, valid,
          rule_table, log2_fact, regret_tab, new_rule_bits, *, robust, min_support,
          min_tail_frac, scan_words=False, tail_order="confidence"):
    """Best tail prefix and usage threshold for a batch of heads, all gains at once.

    Every prefix of the tail ranked by confidence (the spec's) is scored, with every usage
    threshold k. ``tail_order="both"`` scores the prefixes of a second ranking too, by
    one-item gain (:func:`tail_orders`), at twice the cost; the better gain wins (ties: the
    confidence ranking's).

    Args:
      packed_head: uint32 ``(m_a + 1, words)``, last row = valid rows.
      packed_tail: uint32 ``(m_b, words)`` tail-layer data D_b.
      residual: uint32 ``(m_b, words)`` uncovered ones D_b & ~Cov_b.
      residual_counts: int32 ``(m_b,)`` = c_y.
      heads: int32 ``(B, max_head)`` head items, padded with ``m_a``.
      head_sizes: int32 ``(B,)``; valid: bool ``(B,)`` (padding candidates are False).
      rule_table: float64 ``(max_head + 1, K + 1)``, L_rule(|X|, |Y|) + log2 P.
      log2_fact: float64 ``(n + 1,)`` log2 factorials; regret_tab: float64 regret table.
      new_rule_bits: float64 scalar L_N(|R| + 2) - L_N(|R| + 1).
      scan_words: count with a loop over words (CPU) instead of one reduction (GPU).
      tail_order: "confidence" (one ranking) or "both" (the two of :func:`tail_orders`).

    Returns:
      dict of ``(B,)`` arrays: gain (float64, ``NO_RULE`` when no valid rule), size (|Y|), min_hits
      (k), support (|T_X|), usage (|U|), zeros (z), and ``tail`` ``(B, K)`` the winning
      ranking of tail items (the rule's tail is its first ``size``).
    """
    k_tail = rule_table.shape[1] - 1
    rows = head_rows(packed_head, heads)                                  # (B, W)
    support = popcount_sum(rows)                                          # (B,)
    prefixes = lambda tail: _best_prefixes(
        rows, support, tail, packed_tail, residual, residual_counts, head_sizes, valid,
        rule_table, log2_fact, regret_tab, new_rule_bits, robust=robust,
        min_support=min_support, min_tail_frac=min_tail_frac, scan_words=scan_words)
    if tail_order == "confidence":
        _, tail = lax.top_k(cooccurrence(rows, residual), k_tail)         # (B, K), ties: low idx
        return dict(prefixes(tail), support=support, tail=tail)
    tails = tail_orders(rows, support, packed_tail, residual, residual_counts, log2_fact,
                        regret_tab, k_tail, robust)                       # (2, B, K)
    confidence, gain = (prefixes(tail) for tail in tails)
    by_gain = gain["gain"] < confidence["gain"]                           # ties: confidence
    out = {key: jnp.where(by_gain, gain[key], value) for key, value in confidence.items()}
    return dict(out, support=support, tail=jnp.where(by_gain[:, None], tails[1], tails[0]))


def _best_prefixes(rows, support, tail, packed_tail, residual, residual_counts, head_sizes,
                   valid, rule_table, log2_fact, regret_tab, new_rule_bits, *, robust,
                   min_support, min_tail_frac, scan_words):
    """For each candidate b (head rows ``rows`` ``(B, W)``, ranked tail ``tail`` ``(B, K)``),
    the best gain over the prefixes ``tail[b, :j]`` and usage thresholds k -> dict of
    ``(B,)`` gain, size (j), min_hits (k), usage and zeros. Ties: larger k, then shorter tail.
    """
    n = log2_fact.shape[0] - 1
    k_tail = rule_table.shape[1] - 1
    data_y = packed_tail[tail]                                            # (B, K, W)
    new_y = rows[:, None, :] & residual[tail]                             # (B, K, W)
    c = residual_counts[tail].astype(jnp.int64)                           # (B, K)
    base_cover = _codes.lb_table(log2_fact, n, c)                         # (B, K)
    ks = jnp.arange(1, k_tail + 1)                                        # k = 1..K
    rule_bits = rule_table[head_sizes]                                    # (B, K + 1)
    sup = support.astype(jnp.int64)
    head_bits = jnp.where(sup > 0, _codes.regret_device(regret_tab, sup), 0.0)

    def prefix_steps(width):
        """The scan step for prefixes j <= width: only k <= width and y < width can count."""
        ny, cc, bc, kk = new_y[:, :width], c[:, :width], base_cover[:, :width], ks[None, :width]

        def step(at_least, xs):
            j, d = xs                                                     # prefix length j
            # at_least[:, k] = head rows with >= k hits among the first j tail items.
            grown = at_least[:, 1:] | (at_least[:, :-1] & d[:, None, :])
            at_least = jnp.concatenate([at_least[:, :1], grown], axis=1)
            u = popcount_sum(at_least[:, 1:]).astype(jnp.int64)           # (B, w) |U^(k)|
            newly = pair_counts(at_least[:, 1:], ny, scan_words)          # (B, w, w)
            after = cc[:, None, :] - newly.astype(jnp.int64)
            in_prefix = jnp.arange(width)[None, None, :] < j
            cover = jnp.sum(jnp.where(in_prefix, _codes.lb_table(log2_fact, n, after)
                                      - bc[:, None, :], 0.0), axis=-1)   # (B, w)
            hits = kk * u + (jnp.cumsum(u[:, ::-1], axis=1)[:, ::-1] - u)  # sum of h_t over U
            zeros = j * u - hits
            bits = (new_rule_bits + rule_bits[:, j][:, None] + cover + head_bits[:, None]
                    + _codes.lb_table(log2_fact, sup[:, None], jnp.minimum(u, sup[:, None])))
            if robust:
                block = u * j
                bits = bits + jnp.where(block > 0, _codes.lb_lgamma(block, zeros)
                                        + _codes.regret_device(regret_tab, block), 0.0)
                ok = kk <= j
            else:
                ok = kk == j
            need = jnp.ceil(min_tail_frac * j.astype(jnp.float64)).astype(kk.dtype)
            ok = ok & (u >= 1) & (kk >= need)
            ok = ok & valid[:, None] & (support >= min_support)[:, None]
            bits = jnp.where(ok, bits, NO_RULE)
            best = width - 1 - jnp.argmin(bits[:, ::-1], axis=1)          # ties -> larger k
            pick = lambda a: jnp.take_along_axis(a, best[:, None], axis=1)[:, 0]
            return at_least, (pick(bits), best + 1, pick(u), pick(zeros))

        return step

    # Two phases: prefixes up to K/2 work on half-size arrays (5/8 of the counting of one).
    widths = (k_tail // 2, k_tail) if k_tail >= 8 else (k_tail,)
    at_least = jnp.zeros(rows.shape[:1] + (widths[0] + 1,) + rows.shape[1:], rows.dtype)
    at_least = at_least.at[:, 0].set(rows)
    data_y = jnp.swapaxes(data_y, 0, 1)                                   # (K, B, W)
    outs, done = [], 0
    for width in widths:
        pad = width + 1 - at_least.shape[1]
        at_least = jnp.pad(at_least, ((0, 0), (0, pad), (0, 0)))
        at_least, out = lax.scan(prefix_steps(width), at_least,
                                 (jnp.arange(done + 1, width + 1), data_y[done:width]))
        outs.append(out)
        done = width
    gain, k, usage, zeros = (jnp.concatenate(parts) for parts in zip(*outs))
    best_j = jnp.argmin(gain, axis=0)                                     # ties -> shorter tail
    pick = lambda a: jnp.take_along_axis(a, best_j[None, :], axis=0)[0]
    return dict(gain=pick(gain), size=best_j + 1, min_hits=pick(k), usage=pick(usage),
                zeros=pick(zeros))
