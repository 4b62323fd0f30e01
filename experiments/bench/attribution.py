"""Images/s of jaxplain's attribution methods vs Captum and Zennit on the same small CNN.

Run:  python experiments/bench/attribution.py [--batch 32] [--repeats 5] [--out PATH]

The CNN (16x16x3 inputs: conv3x3-16, relu, maxpool2, conv3x3-32, relu, avgpool2, dense-10)
is built twice, in JAX (NHWC) and in PyTorch (NCHW) from the same NumPy weights; the script
checks that both give the same attributions before timing. Gradient, IG and DeepLIFT are
compared with Captum; LRP (EpsilonPlusFlat) with Zennit's own preset when Zennit is
installed. Timings are the
median of `--repeats` rounds after a warm-up, each round one jaxplain call and one peer call
(so that both see the same load on a shared machine; the ratio is the median per-round ratio);
jaxplain's first call compiles and is reported apart. Results are printed and written as a
Markdown table with the device and the machine's load average named.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from jaxplain import attribution as A  # noqa: E402
from jaxplain.lrp import EpsilonPlusFlat  # noqa: E402

HW, C, CLASSES = 16, 3, 10


def weights(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.normal(0, 0.3, (3, 3, C, 16)).astype(np.float32),
        "b1": rng.normal(0, 0.1, 16).astype(np.float32),
        "w2": rng.normal(0, 0.1, (3, 3, 16, 32)).astype(np.float32),
        "b2": rng.normal(0, 0.1, 32).astype(np.float32),
        "wd": rng.normal(0, 0.1, (4 * 4 * 32, CLASSES)).astype(np.float32),
        "bd": rng.normal(0, 0.1, CLASSES).astype(np.float32),
    }


def jax_cnn(w):
    p = {k: jnp.asarray(v) for k, v in w.items()}
    dn = ("NHWC", "HWIO", "NHWC")

    def f(x):
        x = jax.nn.relu(jax.lax.conv_general_dilated(x, p["w1"], (1, 1), "SAME", dimension_numbers=dn) + p["b1"])
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        x = jax.nn.relu(jax.lax.conv_general_dilated(x, p["w2"], (1, 1), "SAME", dimension_numbers=dn) + p["b2"])
        x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4.0
        return x.reshape(x.shape[0], -1) @ p["wd"] + p["bd"]

    return f


def torch_cnn(w):
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(C, 16, 3, padding=1)
            self.relu1 = torch.nn.ReLU()
            self.pool1 = torch.nn.MaxPool2d(2)
            self.conv2 = torch.nn.Conv2d(16, 32, 3, padding=1)
            self.relu2 = torch.nn.ReLU()
            self.pool2 = torch.nn.AvgPool2d(2)
            self.dense = torch.nn.Linear(4 * 4 * 32, CLASSES)
            for conv, k, b in ((self.conv1, "w1", "b1"), (self.conv2, "w2", "b2")):
                conv.weight.data = torch.tensor(w[k].transpose(3, 2, 0, 1).copy())
                conv.bias.data = torch.tensor(w[b])
            self.dense.weight.data = torch.tensor(w["wd"].T.copy())
            self.dense.bias.data = torch.tensor(w["bd"])

        def forward(self, x):
            x = self.pool1(self.relu1(self.conv1(x)))
            x = self.pool2(self.relu2(self.conv2(x)))
            return self.dense(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1))

    return Net().eval()


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired(ours, theirs, repeats):
    """Median seconds per call of each after a warm-up, and the median of the per-round ratios
    theirs/ours: the calls alternate, so that both see the same load on a shared machine."""
    ours(), theirs()
    rounds = [(_seconds(ours), _seconds(theirs)) for _ in range(repeats)]
    return (statistics.median(o for o, _ in rounds), statistics.median(t for _, t in rounds),
            statistics.median(t / o for o, t in rounds))


def _error(a, ref):
    """Max over examples of max|a - ref| / max|ref|."""
    a, ref = np.asarray(a).reshape(len(a), -1), np.asarray(ref).reshape(len(ref), -1)
    return float((np.abs(a - ref).max(1) / np.abs(ref).max(1)).max())


def _zennit_preset():
    """Zennit's EpsilonPlusFlat composite, or None when Zennit is not installed."""
    from tests.attribution import _zennit

    if _zennit.load() is None:
        return None
    from zennit.composites import EpsilonPlusFlat as ZennitEpsilonPlusFlat

    return ZennitEpsilonPlusFlat()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "results",
                                                      "bench_attribution_cpu.md"))
    args = parser.parse_args()

    import torch
    from captum import attr as captum_attr

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    load_start = os.getloadavg()[0]
    w = weights()
    f, model = jax_cnn(w), torch_cnn(w)
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(args.batch, HW, HW, C)).astype(np.float32)
    t = rng.integers(0, CLASSES, args.batch)
    xj, tj = jnp.asarray(x), jnp.asarray(t)
    xt, tt = torch.tensor(x.transpose(0, 3, 1, 2).copy()), torch.tensor(t)

    cases = {  # name: (peer, ours, theirs, context to run theirs in)
        "gradient": ("Captum", lambda: A.gradient(f, xj, tj),
                     lambda: captum_attr.Saliency(model).attribute(xt, target=tt, abs=False),
                     contextlib.nullcontext()),
        "integrated gradients, 50 steps": (
            "Captum", lambda: A.integrated_gradients(f, xj, tj, steps=50),
            lambda: captum_attr.IntegratedGradients(model).attribute(xt, target=tt, n_steps=50),
            contextlib.nullcontext()),
        "deeplift": ("Captum", lambda: A.deeplift(f, xj, tj),
                     lambda: captum_attr.DeepLift(model).attribute(xt, target=tt),
                     contextlib.nullcontext()),
    }
    preset = _zennit_preset()
    if preset is not None:
        from zennit.attribution import Gradient

        onehot = torch.eye(CLASSES)[tt]
        attributor = Gradient(model, preset)  # its hooks are registered for its row only
        cases["LRP EpsilonPlusFlat"] = ("Zennit", lambda: A.lrp(f, xj, tj, rules=EpsilonPlusFlat()),
                                        lambda: attributor(xt, onehot)[1], attributor)
    device = f"{platform.processor() or platform.machine()} CPU, {threads} threads " \
             f"(jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__})"
    rows = []
    for name, (peer, ours, theirs, context) in cases.items():
        start = time.perf_counter()
        a = np.asarray(ours())  # the first call traces and compiles
        first = time.perf_counter() - start
        with context:
            err = _error(a, theirs().detach().numpy().transpose(0, 2, 3, 1))
            ours_s, theirs_s, ratio = paired(lambda: jax.block_until_ready(ours()), theirs, args.repeats)
        rows.append((name, peer, args.batch / ours_s, args.batch / theirs_s, ratio, first, err))
        print(f"{name:32s} jaxplain {args.batch / ours_s:9.1f} img/s   {peer} {args.batch / theirs_s:9.1f} "
              f"img/s   ratio {ratio:5.2f}x   (first call {first:.2f} s, max rel err {err:.1e})")
    notes = ["LRP: Zennit's EpsilonPlusFlat preset, unmodified." if preset is not None
             else "Zennit is not installed: no LRP row."]
    load = f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    print(f"load average (1 min): {load}")

    lines = [
        "# Attribution benchmark: jaxplain vs Captum and Zennit (small CNN, CPU)",
        "",
        f"Device: {device}; load average (1 min) {load}. Batch {args.batch} of 16x16x3 images; CNN "
        "conv3x3-16, relu, maxpool2, conv3x3-32, relu, avgpool2, dense-10, same weights in both. "
        f"Median of {args.repeats} rounds after a warm-up, each round one jaxplain call then one peer "
        "call; ratio = median over rounds of peer time / jaxplain time (> 1: jaxplain faster). The "
        "first jaxplain call includes compilation.",
        "",
        "| method | peer | jaxplain img/s | peer img/s | ratio | jaxplain first call (s) | max rel. error |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {n} | {p} | {o:.1f} | {c:.1f} | {r:.2f}x | {fc:.2f} | {e:.1e} |"
              for n, p, o, c, r, fc, e in rows]
    lines += [""] + notes
    lines += ["", "Produced by `python experiments/bench/attribution.py`."]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
