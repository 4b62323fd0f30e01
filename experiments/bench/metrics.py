"""Benchmark: deletion curves per second, jaxplain vs a per-example, per-step NumPy loop.

The peer loop computes the curves the way Quantus's pixel-flipping metric does: for each
image, sort its relevance, then for each step copy the image, set the next pixels to the
baseline and call the model on that one image (here the same jitted JAX model, so the loop
gets the fastest model call available). jaxplain builds all ``images x (steps + 1)`` inputs
on device and evaluates them in one compiled, vmapped call. Both run in this process on the
same model, images and maps; the curves are checked to agree.

    python experiments/bench/metrics.py [--images 256] [--steps 50] [--repeats 5]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-sizes", default="none,4,8",
                        help="comma-separated batch_size settings of jaxplain to time "
                             "(examples per chunk; 'none' = all at once); the best is reported")
    parser.add_argument("--loop-images", type=int, default=None,
                        help="images for the slow loop (default: all); its rate is per curve")
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

    # jaxplain: compile once per setting, then time repeated calls.
    settings = {}
    for text in args.batch_sizes.split(","):
        bs = None if text.strip().lower() == "none" else int(text)
        t0 = time.perf_counter()
        curve = metrics.deletion(f, x, target, attribution, steps=args.steps, batch_size=bs)
        curve.values.block_until_ready()
        compile_s = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            metrics.deletion(f, x, target, attribution, steps=args.steps,
                             batch_size=bs).values.block_until_ready()
            times.append(time.perf_counter() - t0)
        settings[str(bs)] = {"seconds": round(float(np.median(times)), 4),
                             "curves_per_s": round(args.images / float(np.median(times)), 1),
                             "first_call_seconds": round(compile_s, 2)}
    best = min(settings, key=lambda k: settings[k]["seconds"])
    ours_s = settings[best]["seconds"]
    ours_rate = args.images / ours_s

    # the per-example loop (the model call is the jitted f on one image).
    m = args.loop_images or args.images
    f_one = jax.jit(f)
    xn, tn, an = (np.asarray(v) for v in (x[:m], target[:m], attribution[:m]))
    f_one(xn[:1]).block_until_ready()
    t0 = time.perf_counter()
    loop_curves = numpy_loop(f_one, xn, tn, an, args.steps)
    loop_s = time.perf_counter() - t0
    loop_rate = m / loop_s
    max_diff = float(np.abs(loop_curves - np.asarray(curve.values[:m])).max())

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
        "jaxplain_curves_per_s": round(ours_rate, 1),
        "jaxplain_seconds": round(ours_s, 4),
        "jaxplain_best_batch_size": best,
        "jaxplain_settings": settings,
        "loop_images": m,
        "loop_curves_per_s": round(loop_rate, 1),
        "loop_seconds": round(loop_s, 3),
        "ratio": round(ours_rate / loop_rate, 1),
        "max_abs_curve_difference": max_diff,
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"deletion curves/s on {result['device']}: jaxplain {ours_rate:.0f} (batch_size={best}), "
          f"per-example loop "
          f"{loop_rate:.1f} -> {ours_rate / loop_rate:.1f}x (curves agree to {max_diff:.1e})")


if __name__ == "__main__":
    main()
