"""Images/s of jaxplain's attribution methods vs Captum and Zennit on the same networks.

Run:  python experiments/bench/attribution.py [--batch 32] [--repeats 5] [--resnet50 SIZE] [--out PATH]

A small CNN (16x16x3 inputs: conv3x3-16, relu, maxpool2, conv3x3-32, relu, avgpool2, dense-10)
always, and a random-weight ResNet-50 (batch 32 at 224x224 by default on a GPU; on CPU only
with ``--resnet50 SIZE``) are built twice, in JAX (NHWC) and in PyTorch (NCHW) from the same
weights, on the same device; the script checks that both give the same attributions before
timing. Gradient, IG-50 and DeepLIFT are compared with Captum; LRP (EpsilonPlusFlat) with
Zennit's own preset when Zennit is installed. On the small CNN IG runs twice, all steps in one
pass and 10 steps per pass (Captum's ``internal_batch_size``); on ResNet-50 in chunks of
``--ig-batch-size`` steps in both, and a memory check runs IG-50 on ``--ig-images`` (256) images.
Timings are the median of `--repeats` rounds after a warm-up, each round one jaxplain call and
one peer call (so that both see the same load on a shared machine; the ratio is the median
per-round ratio); jaxplain's first call compiles and is reported apart. Results are printed and
written as Markdown with the device and the machine's load average named.
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


def _cases(f, model, x, t, classes, *, ig_batch_sizes=(None,), zennit_model=None):
    """name -> (peer, ours, theirs, context to run theirs in) for one network, inputs NHWC; one
    IG row per entry of `ig_batch_sizes` (steps per pass, None: all at once, in both)."""
    import torch
    from captum import attr as captum_attr

    dev = next(model.parameters()).device
    xj, tj = jnp.asarray(x), jnp.asarray(t)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), device=dev)
    tt = torch.tensor(t, device=dev)
    cases = {
        "gradient": ("Captum", lambda: A.gradient(f, xj, tj),
                     lambda: captum_attr.Saliency(model).attribute(xt, target=tt, abs=False),
                     contextlib.nullcontext()),
        **{"integrated gradients, 50 steps" + (f", {k} per pass" if k else ""): (
            "Captum", lambda k=k: A.integrated_gradients(f, xj, tj, steps=50, batch_size=k),
            lambda k=k: captum_attr.IntegratedGradients(model).attribute(
                xt, target=tt, n_steps=50, internal_batch_size=k and k * len(x)),
            contextlib.nullcontext()) for k in ig_batch_sizes},
        "deeplift": ("Captum", lambda: A.deeplift(f, xj, tj),
                     lambda: captum_attr.DeepLift(model).attribute(xt, target=tt),
                     contextlib.nullcontext()),
    }
    preset = _zennit_preset()
    if preset is not None:
        from zennit.attribution import Gradient

        onehot = torch.eye(classes, device=dev)[tt]
        attributor = Gradient(zennit_model or model, preset)  # hooks registered for its row only
        cases["LRP EpsilonPlusFlat"] = ("Zennit", lambda: A.lrp(f, xj, tj, rules=EpsilonPlusFlat()),
                                        lambda: attributor(xt, onehot)[1], attributor)
    return cases


def _run(cases, batch, repeats):
    """Rows (name, peer, ours img/s, peer img/s, ratio, first call s, max rel. error)."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    rows = []
    for name, (peer, ours, theirs, context) in cases.items():
        start = time.perf_counter()
        a = np.asarray(ours())  # the first call traces and compiles
        first = time.perf_counter() - start

        def peer_call(theirs=theirs):
            out = theirs()
            sync()
            return out

        with context:
            err = _error(a, peer_call().detach().cpu().numpy().transpose(0, 2, 3, 1))
            ours_s, theirs_s, ratio = paired(lambda: jax.block_until_ready(ours()), peer_call, repeats)
        rows.append((name, peer, batch / ours_s, batch / theirs_s, ratio, first, err))
        print(f"{name:32s} jaxplain {batch / ours_s:9.1f} img/s   {peer} {batch / theirs_s:9.1f} "
              f"img/s   ratio {ratio:5.2f}x   (first call {first:.2f} s, max rel err {err:.1e})")
    return rows


def _table(rows):
    lines = ["| method | peer | jaxplain img/s | peer img/s | ratio | jaxplain first call (s) | max rel. error |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    return lines + [f"| {n} | {p} | {o:.1f} | {c:.1f} | {r:.2f}x | {fc:.2f} | {e:.1e} |"
                    for n, p, o, c, r, fc, e in rows]


def _ig_memory(f, images, size, batch_size):
    """IG-50 on `images` ResNet-50 inputs in chunks of `batch_size` steps: seconds and the
    device's peak memory (where the backend reports it)."""
    x = jax.random.uniform(jax.random.key(3), (images, size, size, 3))
    t = jnp.arange(images) % 1000
    start = time.perf_counter()
    jax.block_until_ready(A.integrated_gradients(f, x, t, steps=50, batch_size=batch_size))
    seconds = time.perf_counter() - start
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return seconds, (peak / 2**30 if peak else None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--resnet50", type=int, default=None, metavar="SIZE",
                        help="also time a random-weight ResNet-50 at SIZE x SIZE (default: 224 on "
                             "a GPU, skipped on CPU)")
    parser.add_argument("--resnet-batch", type=int, default=32)
    parser.add_argument("--ig-batch-size", type=int, default=4,
                        help="IG steps per chunk on ResNet-50 (memory bound)")
    parser.add_argument("--ig-images", type=int, default=256,
                        help="images of the ResNet-50 IG memory check (0: skip)")
    parser.add_argument("--out", default=None, help="default: results/bench_attribution_<platform>.md")
    args = parser.parse_args()

    import torch

    platform_name = jax.devices()[0].platform
    on_gpu = platform_name == "gpu" and torch.cuda.is_available()
    dev = "cuda" if on_gpu else "cpu"
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    if on_gpu:
        torch.backends.cudnn.benchmark = True
    load_start = os.getloadavg()[0]
    w = weights()
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(args.batch, HW, HW, C)).astype(np.float32)
    t = rng.integers(0, CLASSES, args.batch)
    rows = _run(_cases(jax_cnn(w), torch_cnn(w).to(dev), x, t, CLASSES, ig_batch_sizes=(None, 10)),
                args.batch, args.repeats)

    size = args.resnet50 if args.resnet50 is not None else (224 if on_gpu else 0)
    resnet_rows, memory = [], None
    if size:
        from experiments.bench._resnet50 import TorchResNet50, resnet50_jax, resnet50_params

        params = resnet50_params(jax.random.key(0))
        f50 = resnet50_jax(params)
        xr = rng.uniform(size=(args.resnet_batch, size, size, 3)).astype(np.float32)
        tr = rng.integers(0, 1000, args.resnet_batch)
        zennit_twin = TorchResNet50(params, zennit_sums=True).to(dev).eval() \
            if _zennit_preset() is not None else None
        resnet_rows = _run(_cases(f50, TorchResNet50(params).to(dev).eval(), xr, tr, 1000,
                                  ig_batch_sizes=(args.ig_batch_size,), zennit_model=zennit_twin),
                           args.resnet_batch, args.repeats)
        if args.ig_images:
            memory = (args.ig_images, *_ig_memory(f50, args.ig_images, size, args.ig_batch_size))
            print(f"IG-50 on {args.ig_images} ResNet-50 images: {memory[1]:.1f} s, peak device memory "
                  f"{'unknown' if memory[2] is None else f'{memory[2]:.1f} GiB'}")

    if on_gpu:
        device = f"{jax.devices()[0].device_kind} (jax {jax.__version__}, torch {torch.__version__} on " \
                 f"{torch.cuda.get_device_name()})"
    else:
        device = f"{platform.processor() or platform.machine()} CPU, {threads} threads " \
                 f"(jax {jax.__version__} on {platform_name}, torch {torch.__version__})"
    load = f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    print(f"load average (1 min): {load}")
    lines = [
        "# Attribution benchmark: jaxplain vs Captum and Zennit",
        "",
        f"Device: {device}; load average (1 min) {load}. Same weights in both frameworks; median of "
        f"{args.repeats} rounds after a warm-up, each round one jaxplain call then one peer call; "
        "ratio = median over rounds of peer time / jaxplain time (> 1: jaxplain faster). The first "
        "jaxplain call includes compilation. LRP is compared with Zennit's EpsilonPlusFlat preset, "
        "unmodified." if _zennit_preset() is not None else "Zennit is not installed: no LRP row.",
        "",
        f"## Small CNN, batch {args.batch} of 16x16x3 images",
        "",
        "conv3x3-16, relu, maxpool2, conv3x3-32, relu, avgpool2, dense-10.",
        "",
        *_table(rows),
    ]
    if resnet_rows:
        lines += ["", f"## ResNet-50 (random weights), batch {args.resnet_batch} at {size}x{size}", "",
                  "Bottleneck blocks [3, 4, 6, 3], no BatchNorm; residual additions through Zennit's "
                  f"`Sum` module in Zennit's twin. IG in chunks of {args.ig_batch_size} steps in both "
                  "(Captum's `internal_batch_size`).", "", *_table(resnet_rows)]
    if memory:
        peak = "not reported by the backend" if memory[2] is None else f"{memory[2]:.1f} GiB"
        lines += ["", f"IG-50 on {memory[0]} ResNet-50 images in chunks of {args.ig_batch_size} steps: "
                      f"{memory[1]:.1f} s, peak device memory {peak}."]
    command = " ".join(["python experiments/bench/attribution.py", *sys.argv[1:]])
    lines += ["", f"Produced by `{command}`."]
    out = args.out or os.path.join(os.path.dirname(__file__), "..", "results",
                                   f"bench_attribution_{'gpu' if on_gpu else 'cpu'}.md")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {os.path.abspath(out)}")


if __name__ == "__main__":
    main()
