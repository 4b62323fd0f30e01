"""NeuroChains optimisation speed: jaxplain vs a PyTorch loop of the same objective.

Objective (both sides): mean KL(p || q) over the region + l1 * sum s + l1 * sum sigmoid(theta),
one score per unit and one gate per scored site, Adam (lr 1e-2), scores projected onto
[0, 100] after each step, the same weights and the same start. Both check that their first
losses agree. Models:

* the embedded digits CNN (with its residual block), region = 20 test images (digits 3 and 8),
  112 scored units in conv1, block1/conv_a, block1/conv_b and fc1;
* with ``--resnet50 SIZE``: a random-weight Flax ResNet-50 (torchvision layout: Bottleneck
  blocks [3, 4, 6, 3], stride on the 3x3 convolution, BatchNorm in eval mode), 20 images at
  SIZE x SIZE, every BatchNorm output scored (53 sites, 26,560 filters). The issue's setting
  is ``--resnet50 224`` on a GPU (CUDA builds of jax and torch); there it also times a whole
  1000-step ``jaxplain.subnet.extract`` (the issue's target: under 20 s on one H100).

jaxplain runs each phase as one jit-compiled ``lax.scan`` (the library's path); two
diagnostics show where CPU time goes: the same scan without the fast-layout rewrite of the
convolutions (``jaxplain.core._layout``), and jit-compiled single steps called from Python.
Timing is in paired rounds (torch, then jaxplain, per round) and the ratio is the median of
the per-round ratios, so a load change on a shared machine hits both sides. On a CPU torch gets
the faster of 1 thread and all cores (its OpenMP threads spin-wait on a loaded machine).

Run: ``python experiments/bench/subnet.py [--steps 300] [--rounds 5] [--resnet50 SIZE]``
(torch==2.13.0); writes ``experiments/results/bench_subnet_{cpu,gpu}.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

import jaxplain as jp
from jaxplain import data, subnet
from jaxplain.subnet import _optimize
from jaxplain.subnet._extract import _phase, _search_init, resolve_sites

RESULTS = Path(__file__).resolve().parents[1] / "results"
L1 = 1e-3
GPU = jax.default_backend() == "gpu" and torch.cuda.is_available()
TORCH_DEVICE = "cuda" if GPU else "cpu"


def _t(a) -> torch.Tensor:
    return torch.tensor(np.asarray(a), device=TORCH_DEVICE)


def _sync():
    if GPU:
        torch.cuda.synchronize()


# --- the digits CNN -------------------------------------------------------------------------

DIGITS_SITES = ("conv1", "block1/conv_a", "block1/conv_b", "fc1")


def digits_torch(params):
    """``forward(x_nchw, multipliers) -> logits``: the DigitsCNN with a multiplier per site."""
    q = {"conv1": params["conv1"], "conv_a": params["block1"]["conv_a"],
         "conv_b": params["block1"]["conv_b"], "fc1": params["fc1"], "head": params["head"]}
    q = {k: {n: _t(v) for n, v in layer.items()} for k, layer in q.items()}
    w = {k: q[k]["kernel"].permute(3, 2, 0, 1).contiguous() for k in ("conv1", "conv_a", "conv_b")}

    def forward(x, m):
        h = torch.relu(F.conv2d(x, w["conv1"], q["conv1"]["bias"], padding=1)
                       * m[0][None, :, None, None])
        b = torch.relu(F.conv2d(h, w["conv_a"], q["conv_a"]["bias"], padding=1)
                       * m[1][None, :, None, None])
        b = F.conv2d(b, w["conv_b"], q["conv_b"]["bias"], padding=1) * m[2][None, :, None, None]
        h = F.avg_pool2d(torch.relu(h + b), 2).permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        h = torch.relu((h @ q["fc1"]["kernel"] + q["fc1"]["bias"]) * m[3])
        return h @ q["head"]["kernel"] + q["head"]["bias"]

    return forward


# --- ResNet-50 (Flax, and the same network in PyTorch) ----------------------------------------

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, first stride)
_BN = dict(use_running_average=True, momentum=0.9, epsilon=1e-5)


class Bottleneck(nn.Module):
    """``relu(sc(x) + bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))))``."""

    width: int
    stride: int
    project: bool

    @nn.compact
    def __call__(self, x):
        s, pad = (self.stride, self.stride), ((1, 1), (1, 1))
        h = nn.relu(nn.BatchNorm(**_BN, name="bn1")(
            nn.Conv(self.width, (1, 1), use_bias=False, name="conv1")(x)))
        h = nn.relu(nn.BatchNorm(**_BN, name="bn2")(
            nn.Conv(self.width, (3, 3), s, pad, use_bias=False, name="conv2")(h)))
        h = nn.BatchNorm(**_BN, name="bn3")(
            nn.Conv(4 * self.width, (1, 1), use_bias=False, name="conv3")(h))
        if self.project:
            x = nn.BatchNorm(**_BN, name="bn_sc")(
                nn.Conv(4 * self.width, (1, 1), s, "VALID", use_bias=False, name="conv_sc")(x))
        return nn.relu(x + h)


class ResNet50(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(64, (7, 7), (2, 2), ((3, 3), (3, 3)), use_bias=False, name="conv1")(x)
        x = nn.relu(nn.BatchNorm(**_BN, name="bn1")(x))
        x = nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
        for i, (width, blocks, stride) in enumerate(STAGES):
            for j in range(blocks):
                x = Bottleneck(width, stride if j == 0 else 1, j == 0, name=f"layer{i + 1}_{j}")(x)
        return nn.Dense(1000, name="fc")(jnp.mean(x, axis=(1, 2)))


def resnet50_sites() -> tuple[str, ...]:
    names = ["bn1"]
    for i, (_, blocks, _) in enumerate(STAGES):
        for j in range(blocks):
            names += [f"layer{i + 1}_{j}/bn{k}" for k in (1, 2, 3)]
            names += [f"layer{i + 1}_{j}/bn_sc"] if j == 0 else []
    return tuple(names)


def resnet50_variables(x):
    """Random He-initialised weights; BatchNorm statistics and affine parameters drawn at
    random too (bn3 scales small, as trained ResNets keep the residual branches small)."""
    variables = ResNet50().init(jax.random.key(0), x)
    rng = np.random.default_rng(0)

    def draw(path, v):
        key = jax.tree_util.keystr(path)
        if "'mean'" in key or ("'bias'" in key and "bn" in key):
            return jnp.asarray(0.1 * rng.normal(size=v.shape), v.dtype)
        if "'var'" in key:
            return jnp.asarray(rng.uniform(0.5, 1.5, size=v.shape), v.dtype)
        if "'scale'" in key:
            return jnp.asarray(rng.uniform(0.1, 0.3) if "bn3" in key else 1.0, v.dtype) * v
        return v

    return jax.tree_util.tree_map_with_path(draw, variables)


def resnet50_torch(variables):
    """``forward(x_nchw, multipliers) -> logits``: the same ResNet-50, multipliers after each
    BatchNorm in :func:`resnet50_sites` order (weights converted once, on the device)."""
    p = jax.tree.map(_t, variables["params"])
    st = jax.tree.map(_t, variables["batch_stats"])
    kernels = jax.tree_util.tree_map_with_path(
        lambda path, w: w.permute(3, 2, 0, 1).contiguous() if w.ndim == 4 else w, p)

    def conv_bn(x, block, conv, bn, stride, pad, mult):
        q, s, k = (p[block], st[block], kernels[block]) if block else (p, st, kernels)
        y = F.batch_norm(F.conv2d(x, k[conv]["kernel"], stride=stride, padding=pad),
                         s[bn]["mean"], s[bn]["var"], q[bn]["scale"], q[bn]["bias"],
                         False, 0.0, 1e-5)
        return y * mult[None, :, None, None]

    def forward(x, m):
        m = iter(m)
        x = torch.relu(conv_bn(x, None, "conv1", "bn1", 2, 3, next(m)))
        x = F.max_pool2d(x, 3, 2, 1)
        for i, (_, blocks, stride) in enumerate(STAGES):
            for j in range(blocks):
                b, s = f"layer{i + 1}_{j}", stride if j == 0 else 1
                h = torch.relu(conv_bn(x, b, "conv1", "bn1", 1, 0, next(m)))
                h = torch.relu(conv_bn(h, b, "conv2", "bn2", s, 1, next(m)))
                h = conv_bn(h, b, "conv3", "bn3", 1, 0, next(m))
                sc = conv_bn(x, b, "conv_sc", "bn_sc", s, 0, next(m)) if j == 0 else x
                x = torch.relu(sc + h)
        return x.mean((2, 3)) @ p["fc"]["kernel"] + p["fc"]["bias"]

    return forward


# --- the two optimisation loops ---------------------------------------------------------------

def torch_loop(forward, widths, x_nhwc):
    """``(run(steps) -> seconds, first loss)``: the objective in eager PyTorch."""
    x = _t(x_nhwc).permute(0, 3, 1, 2).contiguous()
    scores = [torch.ones(w, device=TORCH_DEVICE, requires_grad=True) for w in widths]
    theta = [torch.full((), 5.0, device=TORCH_DEVICE, requires_grad=True) for _ in widths]
    opt = torch.optim.Adam(scores + theta, lr=1e-2)
    with torch.no_grad():
        logp = torch.log_softmax(forward(x, [torch.ones(w, device=TORCH_DEVICE)
                                             for w in widths]), -1)

    def step():
        g = [torch.sigmoid(t) for t in theta]
        logq = torch.log_softmax(forward(x, [gi * si for gi, si in zip(g, scores)]), -1)
        kl = (logp.exp() * (logp - logq)).sum(-1).mean()
        loss = kl + L1 * sum(s.abs().sum() for s in scores) + L1 * sum(g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for s in scores:
                s.clamp_(0.0, 100.0)
        return loss

    first = float(step().detach())
    step()

    def run(steps):
        _sync()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync()
        return time.perf_counter() - start

    return run, first


def jax_loops(f, x, sites, widths, steps, diagnostics):
    """``({variant: run() -> seconds}, first loss)``: the search phase of ``extract`` (one
    L1 weight), as the library runs it, and with ``diagnostics`` python-stepped single steps and
    (on CPU, where the rewrite applies) the scan without the layout rewrite."""
    opts = subnet.Options(l1=L1, steps=steps)
    logp, state, masks = _search_init(x, f=f, names=sites, units=widths, opts=opts)
    phase = _phase(opts, search=True)
    l1 = jnp.asarray([L1], jnp.float32)
    args = (masks, l1, l1, jnp.asarray(1.0 - 1e-6, jnp.float32), x, logp)

    def scan(fast):
        return _optimize._run_chunk(state, *args, f=f, length=steps, phase=phase, fast=fast)

    def stepped():
        s = state
        for _ in range(steps):
            s = _optimize._run_chunk(s, *args, f=f, length=1, phase=phase)
        return s

    variants = {"scan": lambda: scan(True)}
    if diagnostics and not GPU:  # the layout rewrite applies on CPU only
        variants["scan_without_layout_rewrite"] = lambda: scan(False)
    if diagnostics:
        variants["python_stepped"] = stepped
    runs, first = {}, None
    for name, fn in variants.items():
        out = jax.block_until_ready(fn())  # compile
        first = float(out["history"][0, 0, 0]) if first is None else first

        def timed(fn=fn):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            return time.perf_counter() - start

        runs[name] = timed
    return runs, first


def torch_threads(forward, widths, x, steps) -> int:
    """1 or all cores, whichever runs the torch loop faster here (CPU only)."""
    best = (np.inf, 1)
    for n in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(n)
        run, _ = torch_loop(forward, widths, x)
        best = min(best, (run(steps), n))
    torch.set_num_threads(best[1])
    return best[1]


def compare(name, f, forward, x, sites, steps, rounds, diagnostics=True):
    widths = tuple(s.shape[-1] for s in jp.sites(f, x) if s.name in sites)
    assert resolve_sites(f, x, list(sites)) == sites, "site order must match the torch forward"
    res = {"model": name, "region": list(x.shape), "sites": len(sites),
           "units": int(sum(widths)), "steps_per_round": steps, "rounds": rounds}
    if not GPU:
        res["torch_threads"] = torch_threads(forward, widths, x, max(1, steps // 5))
    t_run, t_first = torch_loop(forward, widths, x)
    j_runs, j_first = jax_loops(f, x, sites, widths, steps, diagnostics)
    res["first_loss"] = {"jax": j_first, "torch": t_first}
    assert abs(j_first - t_first) <= 2e-3 * max(1.0, abs(t_first)), res["first_loss"]
    rates = {k: [] for k in ["torch", *j_runs]}
    for _ in range(rounds):
        rates["torch"].append(steps / t_run(steps))
        for k, run in j_runs.items():
            rates[k].append(steps / run())
    res["steps_per_s"] = {k: float(np.median(v)) for k, v in rates.items()}
    res["ratio_vs_torch"] = {k: float(np.median(np.divide(rates[k], rates["torch"])))
                             for k in j_runs}
    res["per_round_ratio_scan"] = [round(float(a), 2) for a in
                                   np.divide(rates["scan"], rates["torch"])]
    print(json.dumps(res, indent=1), flush=True)
    return res


def time_extract(f, x, sites):
    """Seconds of a whole ``extract`` with 1000 search steps (first call, then warm)."""
    kw = dict(sites=list(sites), key=jax.random.key(0), l1=L1, steps=1000)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        sub = subnet.extract(f, x, **kw)
        jax.block_until_ready(sub)
        times.append(time.perf_counter() - start)
    return {"first_call_s": times[0], "warm_s": times[1], "finetune_steps": 300,
            "kept_units": int(sum(sub.kept_units.values()))}


def device_name() -> str:
    if GPU:
        return f"GPU ({jax.devices()[0].device_kind}; torch {torch.cuda.get_device_name()})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU ({cpu}, {os.cpu_count()} cores)"


def report(results) -> str:
    lines = ["# NeuroChains optimisation benchmark", "",
             f"Device: {results['device']}; jax {results['jax']}, torch {results['torch']}; "
             f"1-min load average at the start {results['load_average']}.", "",
             "| model | region | units | torch steps/s | jaxplain scan steps/s | ratio | "
             "scan without layout rewrite | python-stepped |", "|---|---|---|---|---|---|---|---|"]
    for r in results["models"]:
        s, q = r["steps_per_s"], r["ratio_vs_torch"]
        diag = [f"{s[k]:.1f} ({q[k]:.2f}x)" if k in s else "-"
                for k in ("scan_without_layout_rewrite", "python_stepped")]
        lines.append(f"| {r['model']} | {'x'.join(map(str, r['region']))} | {r['units']} "
                     f"| {s['torch']:.1f} | {s['scan']:.1f} | **{q['scan']:.2f}x** "
                     f"| {diag[0]} | {diag[1]} |")
    lines += ["", "Steps per second are medians over the paired rounds; the ratio is the median "
              "of the per-round ratios (scan per round: "
              + "; ".join(f"{r['model']}: {r['per_round_ratio_scan']}" for r in results["models"])
              + "). First losses (jax, torch): "
              + "; ".join(f"{r['model']}: {r['first_loss']['jax']:.6g}, "
                          f"{r['first_loss']['torch']:.6g}" for r in results["models"]) + "."]
    if "extract" in results:
        e = results["extract"]
        lines += ["", f"Whole `extract` on ResNet-50 (1000 search + 300 fine-tune steps, one L1 "
                  f"weight): {e['first_call_s']:.1f} s first call (compiling), {e['warm_s']:.1f} s "
                  "warm."]
    return "\n".join(lines) + "\n"


def main(steps: int, rounds: int, resnet50: int) -> None:
    results = {"device": device_name(), "backend": jax.default_backend(),
               "jax": jax.__version__, "torch": torch.__version__,
               "load_average": round(os.getloadavg()[0], 1), "models": []}
    if GPU:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True  # as XLA's default f32 precision on GPU
        torch.backends.cudnn.allow_tf32 = True
    model, variables = data.pretrained(progress=False)
    d = data.load_digits()
    y = np.asarray(d.y_test)
    x = jnp.asarray(d.x_test[np.concatenate([np.flatnonzero(y == c)[:10] for c in (3, 8)])])
    results["models"].append(compare("digits CNN", jp.as_function(model, variables),
                                     digits_torch(variables["params"]), x, DIGITS_SITES, steps,
                                     rounds))
    if resnet50:
        x = jax.random.uniform(jax.random.key(1), (20, resnet50, resnet50, 3))
        rv = resnet50_variables(x)
        f = jp.as_function(ResNet50(), rv)
        r_steps = steps if GPU else max(2, steps // 100)
        results["models"].append(compare(f"ResNet-50 {resnet50}px", f, resnet50_torch(rv), x,
                                         resnet50_sites(), r_steps, rounds, diagnostics=GPU))
        if GPU:
            results["extract"] = time_extract(f, x, resnet50_sites())
    name = f"bench_subnet_{'gpu' if GPU else 'cpu'}"
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    text = report(results)
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--resnet50", type=int, default=0, metavar="SIZE",
                        help="also a random-weight ResNet-50 at SIZE x SIZE (224 on a GPU)")
    args = parser.parse_args()
    main(args.steps, args.rounds, args.resnet50)
