"""Benchmark of the ExplaiNN rule miner (jaxplain.rules), run from the repository root.

1. Candidate gains per second: the bit-packed batched device kernel vs two float64 NumPy
   references on the same data in the same run, with the gains checked to agree: (a) dense
   booleans vectorized over the usage threshold k, one head and tail prefix at a time; (b) the
   plain per-candidate transcription the tests use (tests/rules/_reference.py).
   A candidate is one (head X, tail prefix Y_j, threshold k) triple with k <= |Y_j|.
   Also the kernel's memory traffic (a lower bound: the bytes a fused kernel must read) as a
   fraction of the device's peak bandwidth: a datasheet table for GPUs, a NumPy copy measured
   in the same run for a CPU, "unknown" otherwise.
2. End-to-end mining time on planted-rule data (10 rules, tails of 5-20 items).

    python -m experiments.bench.rules            # CPU size: kernel 5,000 x 128, mining 10,000 x 128
    python -m experiments.bench.rules --full     # the issue's size, 50,000 rows x 2 x 512 units,
                                                 # with the spec's default search options (GPU)
    python -m experiments.bench.rules --only mining --rows 50000 --units 512 --tag m50000x512

Writes experiments/results/bench_rules_<platform>[_<tag>].json.
"""

from __future__ import annotations

import argparse
import dataclasses
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
# Peak memory bandwidth (bytes/s) by device kind, most specific name first (datasheets:
# H200 SXM 4.8 TB/s; H100 SXM 3.35, NVL 3.9, PCIe 2.0; A100 80 GB 2.0, 40 GB 1.55).
PEAK_BANDWIDTH = (("H200", 4.8e12), ("H100 NVL", 3.9e12), ("H100 PCIe", 2.0e12),
                  ("H100", 3.35e12), ("A100-SXM4-80GB", 2.04e12), ("A100 80GB", 1.94e12),
                  ("A100", 1.555e12))


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


def bench_gains(n, m, k_tail, heads, rounds=3, sample=4, plain_prefixes=24):
    """Kernel vs NumPy in paired rounds (a shared machine's load hits both alike): each round
    times one kernel call on ``heads`` heads and NumPy on ``sample`` evenly spaced of them; the
    plain per-candidate reference scores the first ``plain_prefixes`` tail prefixes of one head."""
    d_a, d_b, _ = planted(0, n=n, m_a=m, m_b=m, rules=4)
    config = _search.SearchConfig(k_tail=k_tail, batch_size=heads)
    k = min(k_tail, d_b.shape[1])
    with jax.enable_x64(True):
        search = _search._Search({"a": d_a, "b": d_b}, n, (("a", "b"),), config, jax.devices())
        seeds = [(int(x),) for x in range(min(heads, search.data["a"].shape[1]))]
        start = time.perf_counter()
        search.score(0, seeds)
        first_call = time.perf_counter() - start
    table = np.zeros((config.max_head + 1, k + 1))
    for y in range(1, k + 1):
        table[1, y] = search.rule_bits(0, 1, y)
    new_rule = _codes.universal(2) - _codes.universal(1)
    da, db = search.data["a"], search.data["b"]
    cover = np.zeros_like(db)
    picked = list(range(0, len(seeds), max(1, len(seeds) // sample)))[:sample]
    kernel_times, numpy_times = [], []
    for _ in range(rounds):
        with jax.enable_x64(True):
            start = time.perf_counter()
            device = search.score(0, seeds)
            kernel_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        ref = [numpy_best_rule(da, db, cover, seeds[i], k, table, new_rule) for i in picked]
        numpy_times.append((time.perf_counter() - start) * len(seeds) / len(picked))
        for i, (gain, _) in zip(picked, ref):
            if not math.isclose(gain, device[i].gain, rel_tol=1e-9, abs_tol=1e-6):
                raise AssertionError(f"kernel gain {device[i].gain} != NumPy gain {gain} for "
                                     f"head {seeds[i]}")
    ratios = [t_np / t_k for t_np, t_k in zip(numpy_times, kernel_times)]
    device_time, numpy_time = float(np.median(kernel_times)), float(np.median(numpy_times))
    # The plain per-candidate reference the tests use (one (X, Y_j, k) at a time).
    head = seeds[0]
    rows = da[:, list(head)].all(1)
    order = np.argsort(-db[rows].sum(0), kind="stable")[:k]
    start, plain, last = time.perf_counter(), [], min(k, plain_prefixes)  # it is slow: cap them
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
    candidates = len(seeds) * k * (k + 1) // 2
    return dict(rows=n, units=m, k_tail=k, heads=len(seeds), candidates=candidates,
                rounds=rounds, numpy_heads_per_round=len(picked), first_call_s=first_call,
                kernel_s=device_time, numpy_s=numpy_time,
                kernel_candidates_per_s=candidates / device_time,
                numpy_candidates_per_s=candidates / numpy_time,
                ratio=float(np.median(ratios)), ratio_per_round=ratios,
                plain_reference_candidates_per_s=plain_rate,
                ratio_vs_plain_reference=candidates / device_time / plain_rate,
                kernel_bytes_per_s=bytes_moved / device_time)


def bench_mining(n, m, **options):
    """Mine planted-rule data end to end; also count the kernel calls and the heads they scored."""
    d_a, d_b, truth = planted(1, n=n, m_a=m, m_b=m, rules=10, tail_sizes=(5, 20))
    calls, score = [], _search._Search.score

    def counted(self, pair, heads):
        calls.append(len(heads))
        return score(self, pair, heads)

    _search._Search.score = counted
    try:
        start = time.perf_counter()
        rules = mine({"a": d_a, "b": d_b}, **options)
        seconds = time.perf_counter() - start
    finally:
        _search._Search.score = score
    found = {tuple(r.head.tolist()) for r in rules.rules}
    batch = options.get("batch_size", _search.SearchConfig.batch_size)
    return dict(rows=n, units=m, options=options, seconds=seconds, rules=len(rules),
                planted=len(truth), planted_heads_found=sum(h in found for h, _ in truth),
                compression_percent=rules.compression, heads_scored=sum(calls),
                kernel_calls=sum(-(-c // batch) for c in calls))


def calls_per_iteration(m, config):
    """Upper bound on kernel calls per accepted rule: seeds plus ``max_head - 1`` growth levels."""
    growth = -(-config.beam * config.k_head // config.batch_size)
    return -(-m // config.batch_size) + (config.max_head - 1) * growth


def peak_bandwidth(device):
    """``(bytes/s, source)``: a GPU's datasheet peak, a CPU's measured copy rate, or unknown."""
    kind = device.device_kind
    for name, value in PEAK_BANDWIDTH:
        if name in kind:
            return value, f"{kind} datasheet"
    if device.platform == "cpu":
        a = np.ones(1 << 26)                     # 512 MiB, far beyond the caches
        b = np.empty_like(a)
        best = min(_timed(lambda: np.copyto(b, a)) for _ in range(3))
        return 2 * a.nbytes / best, "estimated: NumPy copy of 512 MiB in this run"
    return None, f"unknown for {kind!r}"


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        help="the issue's size with the spec's default options (for a GPU): "
                             "kernel and mining on 50,000 rows x 2 x 512 units")
    parser.add_argument("--only", choices=("gains", "mining"), help="run one part")
    parser.add_argument("--rows", type=int, help="mining rows (default 10,000)")
    parser.add_argument("--units", type=int, help="mining units per layer (default 128)")
    parser.add_argument("--k-tail", type=int, help="mining k_tail (default 16)")
    parser.add_argument("--beam", type=int, help="mining beam (default 16)")
    parser.add_argument("--k-head", type=int, help="mining k_head (default 4)")
    parser.add_argument("--batch-size", type=int, help="mining batch_size (default 64)")
    parser.add_argument("--gain-size", type=int, nargs=4, metavar=("ROWS", "UNITS", "K", "HEADS"),
                        help="kernel benchmark size (default 5000 128 32 32)")
    parser.add_argument("--rounds", type=int, default=3, help="paired kernel/NumPy rounds")
    parser.add_argument("--numpy-heads", type=int, default=4,
                        help="heads the NumPy reference scores per round (its time is scaled up "
                             "to all heads; ~11 s per head at the --full size)")
    parser.add_argument("--plain-prefixes", type=int, default=24,
                        help="tail prefixes the plain per-candidate reference scores")
    parser.add_argument("--tag", help="results file suffix: bench_rules_<platform>_<tag>.json "
                                      "(default: 'full' with --full, none otherwise)")
    args = parser.parse_args()
    spec = _search.SearchConfig()
    if args.full:
        gain_size, mining = (50_000, 512, spec.k_tail, 256), dict(
            rows=50_000, units=512, k_tail=spec.k_tail, beam=spec.beam, k_head=spec.k_head,
            batch_size=256)
    else:
        gain_size, mining = (5_000, 128, 32, 32), dict(rows=10_000, units=128, k_tail=16,
                                                      beam=16, k_head=4, batch_size=64)
    gain_size = tuple(args.gain_size or gain_size)
    for name in mining:
        if getattr(args, name) is not None:
            mining[name] = getattr(args, name)
    device = jax.devices()[0]
    name = f"{device.platform}:{device.device_kind} x{jax.device_count()}"
    report = dict(device=name, command=" ".join(["python -m experiments.bench.rules"]
                                                 + sys.argv[1:]),
                  load_average_1min=round(os.getloadavg()[0], 2), cpu_count=os.cpu_count())
    print(f"device: {name}  (load average {report['load_average_1min']} on "
          f"{report['cpu_count']} CPUs)")
    if args.only != "mining":
        gains = bench_gains(*gain_size, rounds=args.rounds, sample=args.numpy_heads,
                            plain_prefixes=args.plain_prefixes)
        peak, source = peak_bandwidth(device)
        gains["peak_bandwidth_bytes_per_s"], gains["peak_bandwidth_source"] = peak, source
        gains["bandwidth_fraction"] = None if peak is None else gains["kernel_bytes_per_s"] / peak
        report["gains"] = gains
        print(f"gain kernel: {gains['kernel_candidates_per_s']:.3g} candidates/s "
              f"({gains['rows']} rows, {gains['units']} units, K_tail {gains['k_tail']}, "
              f"{gains['heads']} heads, {gains['kernel_s']:.3g} s per call)")
        print(f"  vs NumPy float64 vectorized over k: {gains['numpy_candidates_per_s']:.3g}/s, "
              f"ratio {gains['ratio']:.1f}x (median of rounds: "
              f"{', '.join(f'{r:.1f}' for r in gains['ratio_per_round'])})")
        print(f"  vs plain per-candidate NumPy reference (tests/rules/_reference.py): "
              f"{gains['plain_reference_candidates_per_s']:.3g}/s, "
              f"ratio {gains['ratio_vs_plain_reference']:.1f}x")
        fraction = ("unknown" if peak is None else f"{gains['bandwidth_fraction']:.1%}")
        print(f"  memory traffic (lower bound): {gains['kernel_bytes_per_s'] / 1e9:.2f} GB/s = "
              f"{fraction} of peak ({'?' if peak is None else f'{peak / 1e9:.0f} GB/s'}, "
              f"{source})")
        config = dataclasses.replace(spec, batch_size=gains["heads"])
        bound = calls_per_iteration(gains["units"], config)
        report["estimate"] = dict(calls_per_rule_spec_defaults=bound,
                                  seconds_per_rule=bound * gains["kernel_s"])
        print(f"  a search with the spec's beam {spec.beam}, k_head {spec.k_head}, max_head "
              f"{spec.max_head} makes <= {bound} such calls per accepted rule: <= "
              f"{bound * gains['kernel_s']:.3g} s of kernel time per rule here")
    if args.only != "gains":
        rows, units = mining.pop("rows"), mining.pop("units")
        result = bench_mining(rows, units, **mining)
        report["mining"] = result
        print(f"end-to-end mining: {result['rows']} rows x 2 x {result['units']} units "
              f"({mining}): {result['seconds']:.1f} s, {result['rules']} rules "
              f"({result['planted_heads_found']}/{result['planted']} planted heads), "
              f"L = {result['compression_percent']:.1f}%, {result['heads_scored']} heads in "
              f"{result['kernel_calls']} kernel calls")
    out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")
    os.makedirs(out, exist_ok=True)
    tag = args.tag if args.tag is not None else ("full" if args.full else "")
    path = os.path.join(out, f"bench_rules_{device.platform}{'_' + tag if tag else ''}.json")
    with open(path, "w") as fh:
        json.dump(report, fh, indent=2, default=str)
    print(f"wrote {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
