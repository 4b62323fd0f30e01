"""Benchmark of feature visualization (jaxplain.visualize.render), run as
``python -m experiments.bench.featvis [--steps N] [--site NAME] [--rounds R]`` from the
repository root.

Renders every channel of one layer of the digits CNN (default ``relu_1``: the 64 units after
fc1) two ways, with the same settings (decorrelated Fourier parameterization, jitter, TV,
Adam): all channels in one vmapped call, and one channel per call in a Python loop (the loop
reuses one compiled function: the channel index is a pytree leaf, so it does not retrace).
Both are timed after a warm-up call (compile times are reported apart) in paired rounds, and
the ratio is the median of the per-round ratios, so a load change on a shared machine hits
both ways; wall-clock and process CPU time are both recorded. The images of the two ways agree
(checked). A pixels-only run (no Fourier, transforms or TV) times the network alone, and
an ablation repeats the rounds with the loop body's convolutions left in their
original layout (``jaxplain.core._layout`` disabled), which is what XLA:CPU runs slowly in
a ``while`` loop. Writes experiments/results/bench_featvis_<platform>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jaxplain  # noqa: E402
from jaxplain import data  # noqa: E402
from jaxplain import visualize as vis  # noqa: E402
from jaxplain.visualize import _render  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")


def _timed(fn):
    """(wall seconds, process CPU seconds) of one call."""
    t, c = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    return time.perf_counter() - t, time.process_time() - c


def _rounds(batched, looped, rounds):
    """Paired rounds: per round (batched wall, batched CPU, looped wall, looped CPU)."""
    jax.block_until_ready(batched())
    jax.block_until_ready(looped())
    return [(*_timed(batched), *_timed(looped)) for _ in range(rounds)]


def _summary(rows):
    rows = np.asarray(rows)
    return {"batched_wall_s": float(np.median(rows[:, 0])),
            "batched_cpu_s": float(np.median(rows[:, 1])),
            "looped_wall_s": float(np.median(rows[:, 2])),
            "looped_cpu_s": float(np.median(rows[:, 3])),
            "ratio_wall": float(np.median(rows[:, 2] / rows[:, 0])),
            "ratio_cpu": float(np.median(rows[:, 3] / rows[:, 1])),
            "ratio_wall_per_round": [float(r) for r in rows[:, 2] / rows[:, 0]]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--site", default="relu_1")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ablation-rounds", type=int, default=2)
    args = parser.parse_args(argv)

    f = data.digits_function()
    x = data.load_digits().x_test[:2]
    width = {s.name: s.shape[-1] for s in jaxplain.sites(f, x)}
    n = width[args.site]
    key = jax.random.key(0)
    keys = jax.random.split(key, n)
    kw = dict(shape=(1, 8, 8, 1), steps=args.steps, param=vis.Fourier(std=0.5),
              transforms=(vis.Jitter(1),), regularizers=(vis.TotalVariation(0.002),),
              learning_rate=0.1)
    objs = [vis.channel(args.site, i) for i in range(n)]
    batched = lambda: vis.render(f, objs, key=key, **kw).images
    looped = lambda: [vis.render(f, objs[i], key=keys[i], **kw).images for i in range(n)]

    compile_batched = _timed(batched)[0]
    compile_single = _timed(lambda: vis.render(f, objs[0], key=keys[0], **kw).images)[0]
    agree = float(np.max(np.abs(np.asarray(batched())[:, 0] - np.stack(looped())[:, 0])))
    main_rows = _summary(_rounds(batched, looped, args.rounds))
    load = os.getloadavg()[0]

    # Pixels, no transforms or regularizers: the convolutions alone.
    pkw = dict(shape=kw["shape"], steps=args.steps, param=vis.Pixel(std=0.5),
               learning_rate=0.1)
    pixel_rows = _summary(_rounds(
        lambda: vis.render(f, objs, key=key, **pkw).images,
        lambda: [vis.render(f, objs[i], key=keys[i], **pkw).images for i in range(n)],
        args.ablation_rounds))

    # Ablation: the same rounds with the loop body's convolutions in their original layout.
    rewrite = _render.fast_convolutions
    _render.fast_convolutions = lambda fn: fn
    jax.clear_caches()
    try:
        plain_rows = _summary(_rounds(batched, looped, args.ablation_rounds))
    finally:
        _render.fast_convolutions = rewrite
        jax.clear_caches()

    device = jax.devices()[0]
    result = {"device": f"{device.platform}: {device.device_kind}", "site": args.site,
              "channels": n, "steps": args.steps, "rounds": args.rounds,
              **main_rows, "compile_batched_s": compile_batched,
              "compile_single_s": compile_single, "max_abs_image_difference": agree,
              "pixels_only": pixel_rows, "without_layout_rewrite": plain_rows,
              "cpu_count": os.cpu_count(),
              "load_average_1min": load}
    m, p, q = main_rows, plain_rows, pixel_rows
    print(f"device: {result['device']} ({os.cpu_count()} CPU cores visible, load {load:.1f})")
    print(f"render {n} channels of {args.site}, {args.steps} steps, Fourier + jitter + TV")
    print(f"  vmapped, one call : {m['batched_wall_s']:8.3f} s wall {m['batched_cpu_s']:8.3f} s "
          f"CPU  (first call incl. compile {compile_batched:.2f} s)")
    print(f"  one channel a call: {m['looped_wall_s']:8.3f} s wall {m['looped_cpu_s']:8.3f} s "
          f"CPU  (first call incl. compile {compile_single:.2f} s)")
    print(f"  ratio loop / vmap : {m['ratio_wall']:8.2f}x wall {m['ratio_cpu']:8.2f}x CPU   "
          f"max |image difference| {agree:.2e}")
    print(f"pixels only: vmapped {q['batched_cpu_s']:.3f} s CPU, loop {q['looped_cpu_s']:.3f} s "
          f"CPU, ratio {q['ratio_cpu']:.2f}x (CPU)")
    print(f"without the layout rewrite: vmapped {p['batched_wall_s']:.3f} s, loop "
          f"{p['looped_wall_s']:.3f} s, ratio {p['ratio_wall']:.2f}x (wall)")

    os.makedirs(RESULTS, exist_ok=True)
    stem = os.path.join(RESULTS, f"bench_featvis_{device.platform}")
    with open(stem + ".json", "w") as fh:
        json.dump(result, fh, indent=2)
    rounds = ", ".join(f"{r:.2f}" for r in m["ratio_wall_per_round"])
    with open(stem + ".md", "w") as fh:
        fh.write(
            f"# Feature visualization benchmark ({result['device']})\n\n"
            f"All {n} channels of `{args.site}` on the digits CNN, {args.steps} Adam steps, "
            "decorrelated Fourier parameterization, jitter 1 px, TV 0.002. Medians of "
            f"{args.rounds} paired rounds after a warm-up (compile excluded); {os.cpu_count()} "
            f"CPU cores shared with other jobs (1-min load average {load:.1f}), so CPU time is "
            "given next to wall time.\n\n"
            "| way | wall s | CPU s |\n| --- | --- | --- |\n"
            f"| vmapped (one call) | {m['batched_wall_s']:.3f} | {m['batched_cpu_s']:.3f} |\n"
            f"| one channel per call | {m['looped_wall_s']:.3f} | {m['looped_cpu_s']:.3f} |\n"
            f"| **ratio** | **{m['ratio_wall']:.2f}x** | **{m['ratio_cpu']:.2f}x** |\n\n"
            f"Wall ratio per round: {rounds}. First calls including compilation: vmapped "
            f"{compile_batched:.2f} s, single {compile_single:.2f} s. Images agree to "
            f"{agree:.1e}.\n\n"
            "Pixels only (no Fourier, transforms or TV: the network's convolutions alone): "
            f"vmapped {q['batched_wall_s']:.3f} s wall / {q['batched_cpu_s']:.3f} s CPU, one "
            f"per call {q['looped_wall_s']:.3f} s / {q['looped_cpu_s']:.3f} s, ratio "
            f"{q['ratio_wall']:.2f}x wall / {q['ratio_cpu']:.2f}x CPU "
            f"({args.ablation_rounds} rounds).\n\n"
            "Ablation, the loop body's convolutions in their original layout (the gradient of "
            "an NHWC/HWIO convolution has its kernel's in/out axes swapped; XLA:CPU "
            "canonicalizes that only outside `while` loops and otherwise runs a generic loop "
            f"nest): vmapped {p['batched_wall_s']:.3f} s wall / {p['batched_cpu_s']:.3f} s "
            f"CPU, one per call {p['looped_wall_s']:.3f} s / {p['looped_cpu_s']:.3f} s, ratio "
            f"{p['ratio_wall']:.2f}x wall / {p['ratio_cpu']:.2f}x CPU "
            f"({args.ablation_rounds} rounds).\n")
    return result


if __name__ == "__main__":
    main()
