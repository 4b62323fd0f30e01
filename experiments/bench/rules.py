"""Benchmark of the ExplaiNN rule miner (jaxplain.rules), run as
``python -m experiments.bench.rules [--full]`` from the repository root.

1. Candidate gains per second: the bit-packed batched device kernel vs two float64 NumPy
   references on the same data in the same run, with the gains checked to agree: (a) dense
   booleans vectorized over the usage threshold k, one head and tail prefix at a time; (b) the
   plain per-candidate transcription the tests use (tests/rules/_reference.py).
   A candidate is one (head X, tail prefix Y_j, threshold k) triple with k <= |Y_j|.
2. End-to-end mining time on planted-rule data: 50,000 rows x 2 layers x 512 units with
   ``--full`` (the issue's size, meant for a GPU); by default a scaled-down version for CPU.

Prints the device, the ratio, and on a GPU the fraction of memory bandwidth the kernel
reaches; writes experiments/results/bench_rules.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import jax
import numpy as np
from scipy.special import gammaln

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from jaxplain.rules import _codes, _search, mine  # noqa: E402
from tests.rules import _reference  # noqa: E402
from tests.rules._planted import planted  # noqa: E402

LN2 = math.log(2.0)
# Peak memory bandwidth (bytes/s) of devices we may meet, for the achieved fraction.
PEAK_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}


def _lb(n, k):
    return (gammaln(n + 1.0) - gammaln(k + 1.0) - gammaln(n - k + 1.0)) / LN2


def numpy_best_rule(d_a, d_b, cover, head, k_tail, rule_table, new_rule_bits, min_support=2):
    """Float64 NumPy: rank tails, score every prefix j and every k <= j, keep the best."""
    n = d_a.shape[0]
    rows = d_a[:, list(head)].all(1)
    support = int(rows.sum())
    if support < min_support:
        return math.inf, 0
    residual = d_b & ~cover
    order = np.argsort(-residual[rows].sum(0), kind="stable")[:k_tail]
    data_t, new_t = d_b[rows][:, order], residual[rows][:, order]
    c = residual[:, order].sum(0).astype(np.float64)
    best, evaluated = math.inf, 0
    for j in range(1, len(order) + 1):
        hits = data_t[:, :j].sum(1)
        ks = np.arange(1, j + 1)
        used = hits[None, :] >= ks[:, None]                          # (k, rows)
        u = used.sum(1).astype(np.float64)
        z = (used * (j - hits)[None, :]).sum(1).astype(np.float64)
        g = used.astype(np.float64) @ new_t[:, :j].astype(np.float64)  # (k, j)
        bits = (new_rule_bits + rule_table[len(head), j] + _lb(support, u)
                + _codes.regret(support) + _lb(u * j, z)
                + np.array([_codes.regret(int(b)) for b in u * j])
                + (_lb(n, c[None, :j] - g) - _lb(n, c[None, :j])).sum(1))
        bits = np.where(u > 0, bits, np.inf)
        best = min(best, float(bits.min()))
        evaluated += j
    return best, evaluated


def bench_gains(n, m, k_tail, heads, repeats=3):
    d_a, d_b, _ = planted(0, n=n, m_a=m, m_b=m, rules=4)
    config = _search.SearchConfig(k_tail=k_tail, batch_size=heads)
    with jax.enable_x64(True):
        search = _search._Search({"a": d_a, "b": d_b}, n, (("a", "b"),), config, jax.devices())
        seeds = [(int(x),) for x in range(min(heads, search.data["a"].shape[1]))]
        search.score(0, seeds)  # compile
        start = time.perf_counter()
        for _ in range(repeats):
            device = search.score(0, seeds)
        device_time = (time.perf_counter() - start) / repeats
    k = min(k_tail, search.data["b"].shape[1])
    candidates = len(seeds) * k * (k + 1) // 2
    table = np.zeros((config.max_head + 1, k + 1))
    for y in range(1, k + 1):
        table[1, y] = search.rule_bits(0, 1, y)
    new_rule = _codes.universal(2) - _codes.universal(1)
    da, db = search.data["a"], search.data["b"]
    cover = np.zeros_like(db)
    sample = seeds[: max(4, len(seeds) // 8)]  # the reference is slow: time a subset
    start = time.perf_counter()
    ref = [numpy_best_rule(da, db, cover, h, k, table, new_rule) for h in sample]
    numpy_time = (time.perf_counter() - start) * len(seeds) / len(sample)
    for (gain, _), cand in zip(ref, device):
        if not math.isclose(gain, cand.gain, rel_tol=1e-9, abs_tol=1e-6):
            raise AssertionError(f"kernel gain {cand.gain} != NumPy gain {gain} for {cand.head}")
    # The plain per-candidate reference the tests use (one (X, Y_j, k) at a time).
    head = seeds[0]
    rows = da[:, list(head)].all(1)
    order = np.argsort(-db[rows].sum(0), kind="stable")[:k]
    start, plain, last = time.perf_counter(), [], min(k, 24)  # it is slow: cap the prefixes
    for j in range(1, last + 1):
        tail = tuple(sorted(order[:j].tolist()))
        plain += [_reference.gain(da, db, cover, 0, head, tail, kk) for kk in range(1, j + 1)]
    plain_rate = len(plain) / (time.perf_counter() - start)
    # The kernel's best is the minimum over all candidates: equal when all were evaluated.
    if device[0].gain > min(plain) + 1e-6 or (last == k and not math.isclose(
            min(plain), device[0].gain, rel_tol=1e-9, abs_tol=1e-6)):
        raise AssertionError(f"kernel gain {device[0].gain} vs reference {min(plain)}")
    words = search.words
    # Minimum traffic of the fused kernel: per prefix step, the (w+1) usage masks and the w
    # new-ones masks of each candidate are read once (uint32 words); w = K/2 for the first
    # half of the prefixes, K after (see _kernel.score).
    widths = [k // 2] * (k // 2) + [k] * (k - k // 2) if k >= 8 else [k] * k
    bytes_moved = len(seeds) * sum(2 * w + 1 for w in widths) * words * 4
    return dict(rows=n, units=m, k_tail=k, heads=len(seeds), candidates=candidates,
                kernel_s=device_time, numpy_s=numpy_time,
                kernel_candidates_per_s=candidates / device_time,
                numpy_candidates_per_s=candidates / numpy_time,
                ratio=numpy_time / device_time,
                plain_reference_candidates_per_s=plain_rate,
                ratio_vs_plain_reference=candidates / device_time / plain_rate, kernel_bytes_per_s=bytes_moved / device_time)


def bench_mining(n, m, **options):
    d_a, d_b, truth = planted(1, n=n, m_a=m, m_b=m, rules=10, tail_sizes=(5, 20))
    start = time.perf_counter()
    rules = mine({"a": d_a, "b": d_b}, **options)
    seconds = time.perf_counter() - start
    found = {tuple(r.head.tolist()) for r in rules.rules}
    return dict(rows=n, units=m, options=options, seconds=seconds, rules=len(rules),
                planted=len(truth), planted_heads_found=sum(h in found for h, _ in truth),
                compression_percent=rules.compression)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="50,000 x 2 x 512 (GPU size)")
    args = parser.parse_args()
    device = jax.devices()[0]
    name = f"{device.platform}:{device.device_kind} x{jax.device_count()}"
    print(f"device: {name}")
    if args.full:
        gains = bench_gains(50_000, 512, 64, 256)
        mining = bench_mining(50_000, 512, batch_size=256)
    else:
        gains = bench_gains(5_000, 128, 32, 32)
        mining = bench_mining(10_000, 128, k_tail=16, beam=16, k_head=4)
    print(f"gain kernel: {gains['kernel_candidates_per_s']:.3g} candidates/s "
          f"({gains['rows']} rows, {gains['units']} units, K_tail {gains['k_tail']}, "
          f"{gains['heads']} heads)")
    print(f"  vs NumPy float64 vectorized over k: {gains['numpy_candidates_per_s']:.3g}/s, "
          f"ratio {gains['ratio']:.1f}x")
    print(f"  vs plain per-candidate NumPy reference (tests/rules/_reference.py): "
          f"{gains['plain_reference_candidates_per_s']:.3g}/s, "
          f"ratio {gains['ratio_vs_plain_reference']:.1f}x")
    peak = next((v for k, v in PEAK_BANDWIDTH.items() if k in device.device_kind), None)
    if peak is not None:
        gains["bandwidth_fraction"] = gains["kernel_bytes_per_s"] / peak
        print(f"gain kernel memory traffic: {gains['kernel_bytes_per_s'] / 1e9:.1f} GB/s = "
              f"{gains['bandwidth_fraction']:.1%} of {device.device_kind} peak")
    print(f"end-to-end mining: {mining['rows']} rows x 2 x {mining['units']} units: "
          f"{mining['seconds']:.1f} s, {mining['rules']} rules "
          f"({mining['planted_heads_found']}/{mining['planted']} planted heads), "
          f"L = {mining['compression_percent']:.1f}%")
    out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")
    os.makedirs(out, exist_ok=True)
    suffix = "_full" if args.full else ""
    with open(os.path.join(out, f"bench_rules{suffix}.json"), "w") as fh:
        json.dump(dict(device=name, gains=gains, mining=mining), fh, indent=2, default=str)


if __name__ == "__main__":
    main()
