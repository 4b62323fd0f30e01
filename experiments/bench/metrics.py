"""Benchmark: deletion curves per second, jaxplain vs a per-example, per-step NumPy loop.

The peer loop computes the curves the way Quantus's pixel-flipping metric does: for each
image, sort its relevance, then for each step copy the image, set the next pixels to the
baseline and call the model on that one image (here the same jitted JAX model, so the loop
gets the fastest model call available). jaxplain builds all ``images x (steps + 1)`` inputs
on device and evaluates them in one compiled, vmapped call. Both run in this process on the
same model, images and maps; the curves are checked to agree. The two are timed in paired
rounds (jaxplain on all images, then the loop on the next slice of them) and the reported
ratio is the median of the per-round ratios, so a load change on a shared CPU hits both.

Each round also times the *forward floor*: the same jitted model on the same
``images x (steps + 1)`` perturbed inputs (built beforehand in NumPy), in the same chunks, with
no ranking, masking or readout. No batched implementation can beat it without a faster model,
so ``ceiling_ratio`` (floor vs loop) bounds what any batched deletion curve can reach against
this loop on this machine, and ``jaxplain_share_of_floor`` (jaxplain's speed over the floor's)
measures jaxplain's own overhead. ``fastest_rounds_ratio`` divides each side's fastest round,
an estimate for a quiet machine when the load comes and goes. The loop's model call alone (one
image, the same jitted model) is timed apart, to show how much of the loop's step is the model
and how much is the Python and NumPy around it.

    python experiments/bench/metrics.py [--images 256] [--steps 50] [--rounds 16]

Writes ``experiments/results/bench_metrics.json`` (and prints a summary line with the ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np


def numpy_loop(f_one, x: np.ndarray, target: np.ndarray, attribution: np.ndarray,
               steps: int) -> np.ndarray:
    """Deletion curves, one image and one step at a time (zeros baseline, MoRF, probability)."""
    n_img, h, w, _ = x.shape
    n = h * w
    curves = np.zeros((n_img, steps + 1))
    for i in range(n_img):
        order = np.argsort(-attribution[i].sum(-1).ravel(), kind="stable")
        for k in range(steps + 1):
            xi = x[i].copy().reshape(n, -1)
            xi[order[: k * n // steps]] = 0.0
            logits = np.asarray(f_one(xi.reshape(1, h, w, -1)))[0]
            e = np.exp(logits - logits.max())
            curves[i, k] = e[target[i]] / e.sum()
    return curves


def perturbed_inputs(x: np.ndarray, attribution: np.ndarray, steps: int) -> np.ndarray:
    """All ``(images * (steps + 1), H, W, C)`` deletion inputs of :func:`numpy_loop`, in its order."""
    n_img, h, w, c = x.shape
    n = h * w
    order = np.argsort(-attribution.sum(-1).reshape(n_img, n), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n)[None], axis=1)
    counts = np.array([k * n // steps for k in range(steps + 1)])
    removed = rank[:, None, :] < counts[None, :, None]               # (images, steps + 1, n)
    out = np.where(removed[..., None], 0.0, x.reshape(n_img, 1, n, c))
    return out.reshape(n_img * (steps + 1), h, w, c).astype(x.dtype)


def time_settings(run, batch_sizes, repeats):
    """``{str(bs): timings}`` of ``run(bs)`` per setting (the first call compiles) and the fastest."""
    settings = {}
    for bs in batch_sizes:
        t0 = time.perf_counter()
        run(bs)
        compile_s = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(bs)
            times.append(time.perf_counter() - t0)
        settings[str(bs)] = {"seconds": round(float(np.median(times)), 4),
                             "best_seconds": round(min(times), 4),
                             "first_call_seconds": round(compile_s, 2)}
    best = min(settings, key=lambda k: settings[k]["best_seconds"])
    return settings, best


def paired_rounds(ours, floor, loop, images, rounds):
    """Per round: ``ours()`` and ``floor()`` on all images, ``loop(slice)`` on the next slice.

    Returns the curves/s of each per round and the loop's curves, so a load change on a shared
    CPU hits all three in the same round.
    """
    per = max(1, images // rounds)
    rates = {"jaxplain": [], "floor": [], "loop": []}
    loop_curves = []
    for r in range(rounds):
        for name, fn in (("jaxplain", ours), ("floor", floor)):
            t0 = time.perf_counter()
            fn()
            rates[name].append(images / (time.perf_counter() - t0))
        sl = slice(r * per, (r + 1) * per)
        t0 = time.perf_counter()
        loop_curves.append(loop(sl))
        rates["loop"].append(len(loop_curves[-1]) / (time.perf_counter() - t0))
    return {k: np.array(v) for k, v in rates.items()}, np.concatenate(loop_curves)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-sizes", default="none,51,102,204,408",
                        help="comma-separated batch_size settings of jaxplain to time "
                             "(perturbed images per model call, multiples of steps + 1; 'none' = "
                             "all at once); the fastest is used")
    parser.add_argument("--rounds", type=int, default=16,
                        help="paired rounds; each times jaxplain and the floor on all images and "
                             "the loop on images/rounds of them")
    parser.add_argument("--calls", type=int, default=2000,
                        help="single-image model calls timed for the loop's model-call cost")
    parser.add_argument("--out", default="experiments/results/bench_metrics.json")
    args = parser.parse_args()

    from jaxplain import data, metrics
    from jaxplain.core import as_function

    model, variables = data.pretrained()
    f = as_function(model, variables)
    digits = data.load_digits()
    x = jnp.asarray(np.resize(np.asarray(digits.x_test), (args.images, 8, 8, 1)))
    target = jnp.argmax(f(x), axis=-1)
    grad = jax.jit(jax.grad(lambda x, t: f(x)[jnp.arange(len(x)), t].sum()))
    attribution = grad(x, target) * x
    xn, tn, an = (np.asarray(v) for v in (x, target, attribution))
    k = args.steps + 1

    def ours(bs):
        return metrics.deletion(f, x, target, attribution, steps=args.steps,
                                batch_size=bs).values.block_until_ready()

    sizes = [None if t.strip().lower() == "none" else int(t) for t in args.batch_sizes.split(",")]
    settings, best = time_settings(ours, sizes, args.repeats)
    bs = None if best == "None" else int(best)
    curve = np.asarray(ours(bs))

    # The forward floor: the same model on the same perturbed inputs in the same chunks.
    inputs = jnp.asarray(perturbed_inputs(xn, an, args.steps))
    if bs is None:
        floor = jax.jit(f)
    else:
        floor = jax.jit(lambda z: jax.lax.map(f, z.reshape((-1, bs) + z.shape[1:])))
    floor_logits = np.asarray(floor(inputs)).reshape(args.images, k, -1)
    floor_p = np.asarray(jax.nn.softmax(floor_logits, axis=-1))[np.arange(args.images), :, tn]
    floor_diff = float(np.abs(floor_p - curve).max())

    f_one = jax.jit(f)
    f_one(xn[:1]).block_until_ready()
    rates, loop_curves = paired_rounds(
        lambda: ours(bs), lambda: floor(inputs).block_until_ready(),
        lambda sl: numpy_loop(f_one, xn[sl], tn[sl], an[sl], args.steps), args.images,
        args.rounds,
    )
    max_diff = float(np.abs(loop_curves - curve[: len(loop_curves)]).max())
    per_round = rates["jaxplain"] / rates["loop"]
    calls = []
    for _ in range(args.calls):
        t0 = time.perf_counter()
        np.asarray(f_one(xn[:1]))
        calls.append(time.perf_counter() - t0)
    med = {name: float(np.median(v)) for name, v in rates.items()}

    device = jax.devices()[0]
    result = {
        "benchmark": "deletion curves (MoRF, zeros baseline, softmax), digits CNN",
        "images": args.images,
        "steps": args.steps,
        "device": f"{device.platform} ({device.device_kind}, {jax.device_count()} device(s))",
        "host": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "jaxplain_batch_size": best,
        "jaxplain_settings": settings,
        "rounds": args.rounds,
        "jaxplain_curves_per_s": round(med["jaxplain"], 1),
        "forward_floor_curves_per_s": round(med["floor"], 1),
        "loop_curves_per_s": round(med["loop"], 1),
        "ratio": round(float(np.median(per_round)), 1),
        "ratio_quartiles": [round(float(q), 1) for q in np.percentile(per_round, [25, 75])],
        "ratio_per_round": [round(float(v), 1) for v in per_round],
        "ceiling_ratio": round(float(np.median(rates["floor"] / rates["loop"])), 1),
        "fastest_rounds_curves_per_s": {name: round(float(v.max()), 1) for name, v in rates.items()},
        "fastest_rounds_ratio": round(float(rates["jaxplain"].max() / rates["loop"].max()), 1),
        "fastest_rounds_ceiling_ratio": round(float(rates["floor"].max() / rates["loop"].max()), 1),
        "jaxplain_share_of_floor": round(float(np.median(rates["jaxplain"] / rates["floor"])), 3),
        "batched_model_us_per_image": round(1e6 / (med["floor"] * k), 1),
        "loop_us_per_step": round(1e6 / (med["loop"] * k), 1),
        "loop_model_call_us": round(1e6 * float(np.median(calls)), 1),
        "loop_images": int(len(loop_curves)),
        "max_abs_curve_difference": max_diff,
        "floor_max_abs_difference": floor_diff,
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"deletion curves/s on {result['device']}: jaxplain {med['jaxplain']:.0f} "
          f"(batch_size={best}), per-example loop {med['loop']:.1f} -> {result['ratio']}x "
          f"(median of {args.rounds} paired rounds, quartiles {result['ratio_quartiles']}; "
          f"curves agree to {max_diff:.1e}); forward floor {med['floor']:.0f} -> ceiling "
          f"{result['ceiling_ratio']}x, jaxplain at {result['jaxplain_share_of_floor']} of the "
          f"floor's speed; loop step {result['loop_us_per_step']:.0f} us, of which the model "
          f"call {result['loop_model_call_us']:.0f} us; fastest rounds "
          f"{result['fastest_rounds_ratio']}x (ceiling {result['fastest_rounds_ceiling_ratio']}x)")


if __name__ == "__main__":
    main()
