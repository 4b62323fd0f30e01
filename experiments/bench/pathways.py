"""Benchmark: NeuronMCT contributions + selection + pathway gradient, images per second.

jaxplain (one compiled function, the whole batch at once, the percentile on the device) against
the authors' reference procedure re-implemented with PyTorch module hooks (torch==2.13.0): one
image at a time, forward hooks that multiply each ReLU call's output by its mask, backward hooks
that record the gradients, the scores moved to the host and thresholded with
``numpy.percentile``, and the same bookkeeping forwards as the authors' ``Pruner``
(original output, mask initialisation, output-change check). Both run in this process on the
same device with the same weights (the digits CNN), and the two pathway gradients are compared.

Run: ``python experiments/bench/pathways.py [--images 200] [--keep 0.3]``; writes
``experiments/results/bench_pathways.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

import jaxplain as jp
from jaxplain import data, pathways

RESULTS = Path(__file__).resolve().parents[1] / "results"


class TorchDigitsCNN(nn.Module):
    """The DigitsCNN in PyTorch, one ``nn.ReLU`` per call site (as the hooks need)."""

    def __init__(self, params):
        super().__init__()
        p = jax.tree.map(lambda a: torch.tensor(np.asarray(a)), params)

        def conv(q):
            c = nn.Conv2d(q["kernel"].shape[2], q["kernel"].shape[3], 3, padding=1)
            c.weight.data = q["kernel"].permute(3, 2, 0, 1).contiguous()
            c.bias.data = q["bias"]
            return c

        def dense(q):
            d = nn.Linear(*q["kernel"].shape)
            d.weight.data = q["kernel"].T.contiguous()
            d.bias.data = q["bias"]
            return d

        self.conv1, self.conv_a, self.conv_b = conv(p["conv1"]), conv(p["block1"]["conv_a"]), conv(p["block1"]["conv_b"])
        self.fc1, self.head = dense(p["fc1"]), dense(p["head"])
        self.relus = nn.ModuleList([nn.ReLU() for _ in range(4)])

    def forward(self, x):  # x: NCHW
        x = self.relus[0](self.conv1(x))
        h = self.relus[1](self.conv_a(x))
        x = self.relus[2](x + self.conv_b(h))
        x = nn.functional.avg_pool2d(x, 2)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # flatten in NHWC order, as Flax
        return self.head(self.relus[3](self.fc1(x)))


class HookedPathway:
    """The authors' hook-based procedure for one image (NeuronMCT + PathwayGrad)."""

    def __init__(self, model):
        self.model = model.eval()
        self.masks, self.acts, self.grads = [], [], []
        for relu in model.relus:
            relu.register_forward_hook(self._forward_hook)
            relu.register_full_backward_hook(self._backward_hook)

    def _forward_hook(self, module, inputs, output):
        if self.masks:
            output = output * self.masks[len(self.acts)]
        self.acts.append(output)
        return output

    def _backward_hook(self, module, grad_input, grad_output):
        self.grads.append(grad_output[0])

    def _forward(self, x):
        self.acts, self.grads = [], []
        self.model.zero_grad()
        return self.model(x)

    def __call__(self, x, keep):
        self.masks = []
        out = self._forward(x).detach()                      # original output
        label = int(out.argmax(1))
        self._forward(x)                                     # mask initialisation
        self.masks = [torch.ones_like(a) for a in self.acts]
        y = self._forward(x)
        y[0, label].backward()                               # scoring pass
        grads = self.grads[::-1]
        scores = [torch.abs(a * g) for a, g in zip(self.acts, grads)]
        flat = np.concatenate([s.detach().cpu().numpy().ravel() for s in scores])
        tau = np.percentile(flat, 100 * (1 - keep))          # on the host
        self.masks = [(s > tau).float() for s in scores]
        self._forward(x)                                     # output-change check
        xr = x.clone().requires_grad_(True)
        y = self._forward(xr)
        y[0, label].backward()                               # pathway gradient
        self.masks = []
        return xr.grad.detach()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def time_jax(f, x, t, keep, repeats):
    fn = lambda: pathways.pathway_gradient(f, x, t, keep=keep).block_until_ready()  # noqa: E731
    t0 = time.perf_counter()
    out = fn()
    compile_s = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return out, compile_s, float(np.median(runs))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--keep", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, variables = data.pretrained()
    digits = data.load_digits()
    f = jp.as_function(model, variables)
    x = jnp.asarray(digits.x_test[: args.images])
    t = jnp.argmax(f(x), -1)
    device = f"{jax.devices()[0].platform.upper()} ({cpu_name()}, {os.cpu_count()} cores)"

    # Reference: one image at a time, hooks, NumPy percentile on the host.
    ref = HookedPathway(TorchDigitsCNN(variables["params"]))
    xt = torch.tensor(np.asarray(x)).permute(0, 3, 1, 2).contiguous()
    torch.set_num_threads(1)  # one small image per call: one thread is fastest
    ref(xt[:1], args.keep)  # warm-up
    t0 = time.perf_counter()
    ref_maps = torch.cat([ref(xt[i : i + 1], args.keep) for i in range(len(xt))])
    ref_s = time.perf_counter() - t0
    ref_maps = ref_maps.permute(0, 2, 3, 1).numpy()

    rows = []
    for batch in (1, 32, len(x)):
        xb, tb = x[:batch], t[:batch]
        out, compile_s, run_s = time_jax(f, xb, tb, args.keep, args.repeats)
        rows.append({"batch": batch, "compile_s": compile_s, "seconds": run_s,
                     "images_per_s": batch / run_s})
        if batch == len(x):
            diff = np.abs(np.asarray(out) - ref_maps)
            scale = np.abs(ref_maps).max()
    ref_ips = len(x) / ref_s
    res = {
        "device": device, "images": len(x), "keep": args.keep, "model": "DigitsCNN (8x8x1)",
        "reference_s_per_image": ref_s / len(x), "reference_images_per_s": ref_ips,
        "jaxplain": rows, "speedup_full_batch": rows[-1]["images_per_s"] / ref_ips,
        "max_abs_diff_vs_reference": float(diff.max()), "reference_max_abs": float(scale),
        "maps_equal_within_1e-4_rel": float((diff <= 1e-4 * scale).mean()),
    }
    lines = [
        "# Pathway gradient benchmark (NeuronMCT + selection + pathway gradient)", "",
        f"Device: {device}. Model: {res['model']}, {len(x)} test images, keep={args.keep} "
        f"(p={100 * (1 - args.keep):.0f}).", "",
        "| implementation | batch | s per call | images/s | x reference |", "|---|---|---|---|---|",
        f"| authors' procedure, torch hooks, one image at a time, NumPy percentile | 1 | "
        f"{res['reference_s_per_image']:.4f} | {ref_ips:.1f} | 1.0 |",
    ]
    for r in rows:
        lines.append(f"| jaxplain.pathways.pathway_gradient (jit, percentile on device) | {r['batch']} | "
                     f"{r['seconds']:.4f} | {r['images_per_s']:.1f} | {r['images_per_s'] / ref_ips:.1f} |")
    lines += ["", f"Agreement with the torch reference: max |diff| {res['max_abs_diff_vs_reference']:.2e} "
              f"(max |map| {scale:.2e}); {res['maps_equal_within_1e-4_rel']:.2%} of pixels within "
              "1e-4 relative. Compile time of the first call is excluded (batch 1: "
              f"{rows[0]['compile_s']:.2f} s).",
              "Timings share a 2-core machine with other jobs; ratios come from one run.", ""]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_pathways.json").write_text(json.dumps(res, indent=1))
    (RESULTS / "bench_pathways.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
