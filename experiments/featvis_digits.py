"""Feature visualization of the embedded digits CNN, run as
``python -m experiments.featvis_digits [--steps N]`` from the repository root.

1. Renders every channel of two layers (``relu`` after conv1, ``block1/relu_1`` after the
   residual block) and the NMF neuron groups of ``block1/relu_1`` in one vmapped call
   (decorrelated Fourier parameterization, jitter, TV), and compares each channel's value on
   its rendered input with the largest value over the 450 test digits and with the start.
2. Pixel vs Fourier parameterization on the same objectives: objective values and the
   high-frequency share of the rendered images' energy.
3. NMF reconstruction error of ``block1/relu_1`` for several numbers of groups.

Writes experiments/results/featvis_digits.{png,json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxplain import data  # noqa: E402
from jaxplain import visualize as vis  # noqa: E402
from jaxplain.visualize._demo import GROUP_SITE, grid_figure, render_layers, summary_rows  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def high_freq_share(images: np.ndarray) -> np.ndarray:
    """Share of each (mean-removed) image's spectral energy at radial frequency > 0.25."""
    img = np.asarray(images, np.float64)
    img = img - img.mean(axis=(-1, -2), keepdims=True)
    power = np.abs(np.fft.fft2(img)) ** 2
    fy = np.fft.fftfreq(img.shape[-2])[:, None]
    fx = np.fft.fftfreq(img.shape[-1])[None, :]
    high = np.sqrt(fy**2 + fx**2) > 0.25
    return (power * high).sum(axis=(-1, -2)) / np.maximum(power.sum(axis=(-1, -2)), 1e-12)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--groups", type=int, default=6)
    args = parser.parse_args(argv)

    f = data.digits_function()
    digits = data.load_digits()
    x = jnp.asarray(digits.x_test)
    key = jax.random.key(0)
    out = {"steps": args.steps, "device": jax.devices()[0].device_kind}

    t = time.perf_counter()
    results, grp, group_images = render_layers(f, x, key=key, steps=args.steps,
                                               groups=args.groups, nmf_steps=500)
    out["render_layers_s"] = time.perf_counter() - t
    rows = summary_rows(results)
    out["layers"] = [dict(zip(["site", "channels", "live", "beat_data_max",
                               "median_value_over_data_max"], r)) for r in rows]
    out["layers_detail"] = [{"site": r.site, "value": r.value.tolist(),
                             "data_best": r.data_best.tolist(), "start": r.start.tolist()}
                            for r in results]
    out["nmf_groups"] = {"site": GROUP_SITE, "groups": args.groups, "error": float(grp.error),
                         "top_channels": [np.argsort(-np.asarray(d))[:3].tolist()
                                          for d in grp.directions]}
    fig = grid_figure(results, grp, group_images)
    os.makedirs(RESULTS, exist_ok=True)
    fig.savefig(os.path.join(RESULTS, "featvis_digits.png"), dpi=130, bbox_inches="tight")

    # Pixel vs Fourier on the channels of block1/relu_1 (same steps, rate, no transforms).
    objs = [vis.channel("block1/relu_1", i) for i in range(16)]
    kw = dict(key=key, shape=(1, 8, 8, 1), steps=args.steps, learning_rate=0.05)
    comparison = {}
    for name, param in (("pixel", vis.Pixel()), ("fourier", vis.Fourier())):
        r = vis.render(f, objs, param=param, **kw)
        comparison[name] = {"median_value": float(np.median(r.value)),
                            "median_high_freq_share": float(np.median(
                                high_freq_share(np.asarray(r.images[:, 0, ..., 0]))))}
    out["pixel_vs_fourier"] = comparison

    errors = {}
    for k in (1, 2, 4, 8, 12):
        g = vis.neuron_groups(f, x, site=GROUP_SITE, groups=k, key=key, steps=500)
        errors[k] = float(g.error)
    out["nmf_error_by_groups"] = errors

    with open(os.path.join(RESULTS, "featvis_digits.json"), "w") as fh:
        json.dump(out, fh, indent=2)
    lines = [f"# Feature visualization of the digits CNN ({args.steps} steps, {out['device']})",
             "", "![grid](featvis_digits.png)", "",
             "| site | channels | live | beat every test digit | median value / data max |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.2f} |" for r in rows]
    lines += ["", "A channel is *live* when it is active on the start image (a channel that is "
              "zero everywhere near the start gets no gradient).", "",
              "| parameterization | median objective | median high-frequency share |",
              "| --- | --- | --- |"]
    lines += [f"| {k} | {v['median_value']:.3f} | {v['median_high_freq_share']:.3f} |"
              for k, v in comparison.items()]
    lines += ["", f"NMF of `{GROUP_SITE}` (450 test digits x 64 positions, 16 channels): "
              "relative reconstruction error by number of groups: "
              + ", ".join(f"{k}: {v:.3f}" for k, v in errors.items()) + ".",
              "", f"Rendering both layers and the {args.groups} groups (one vmapped call, incl. "
              f"compilation) took {out['render_layers_s']:.1f} s."]
    with open(os.path.join(RESULTS, "featvis_digits.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
