"""NeuroChains optimisation speed: jaxplain vs a PyTorch loop of the same objective.

The digits CNN (embedded default), region = 20 test images (digits 3 and 8), scores on conv1,
block1/conv_a, block1/conv_b and fc1 (112 units), one gate per site, objective
mean KL(p || q) + l1 * sum s + l1 * sum sigmoid(theta), Adam (lr 1e-2), scores projected onto
[0, 100] after each step. Both sides start from the same scores and check that their first loss
agrees. Prints optimisation steps per second and the ratio, with the device; writes
``experiments/results/bench_subnet_cpu.json``.

Run: ``python experiments/bench/subnet.py [--steps 300]`` (needs torch==2.13.0, CPU wheel).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

import jaxplain as jp
from jaxplain import data, subnet
from jaxplain.subnet import _optimize

SITES = ("conv1", "block1/conv_a", "block1/conv_b", "fc1")
L1 = 1e-3


def torch_loop(params, x, steps):
    """The same objective in PyTorch (eager), weights copied from the Flax variables."""
    t = {k: {n: torch.tensor(np.asarray(v)) for n, v in layer.items()}
         for k, layer in {"conv1": params["conv1"], "conv_a": params["block1"]["conv_a"],
                          "conv_b": params["block1"]["conv_b"], "fc1": params["fc1"],
                          "head": params["head"]}.items()}
    conv_w = {k: t[k]["kernel"].permute(3, 2, 0, 1).contiguous() for k in ("conv1", "conv_a",
                                                                           "conv_b")}
    xt = torch.tensor(np.asarray(x)).permute(0, 3, 1, 2).contiguous()
    widths = (16, 16, 16, 64)
    scores = [torch.ones(w, requires_grad=True) for w in widths]
    theta = [torch.full((), 5.0, requires_grad=True) for _ in widths]
    opt = torch.optim.Adam(scores + theta, lr=1e-2)

    def forward(xt):
        g = [torch.sigmoid(th) for th in theta]
        m = [gi * si for gi, si in zip(g, scores)]
        h = torch.nn.functional.conv2d(xt, conv_w["conv1"], t["conv1"]["bias"], padding=1)
        h = torch.relu(h * m[0][None, :, None, None])
        b = torch.nn.functional.conv2d(h, conv_w["conv_a"], t["conv_a"]["bias"], padding=1)
        b = torch.relu(b * m[1][None, :, None, None])
        b = torch.nn.functional.conv2d(b, conv_w["conv_b"], t["conv_b"]["bias"], padding=1)
        h = torch.relu(h + b * m[2][None, :, None, None])
        h = torch.nn.functional.avg_pool2d(h, 2)
        h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)
        h = torch.relu((h @ t["fc1"]["kernel"] + t["fc1"]["bias"]) * m[3])
        return h @ t["head"]["kernel"] + t["head"]["bias"], g

    with torch.no_grad():
        logp = torch.log_softmax(forward(xt)[0], -1)

    def step():
        logits, g = forward(xt)
        logq = torch.log_softmax(logits, -1)
        kl = (logp.exp() * (logp - logq)).sum(-1).mean()
        loss = kl + L1 * sum(s.abs().sum() for s in scores) + L1 * sum(g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for s in scores:
                s.clamp_(0.0, 100.0)
        return float(loss.detach())

    first = step()
    for _ in range(10):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start), first


def jax_loop(f, x, steps, loop):
    opts = subnet.Options(l1=L1, steps=steps)
    names = SITES
    units = (16, 16, 16, 64)
    from jaxplain.subnet._extract import _phase, _search_init

    logp, state, masks = _search_init(x, f=f, names=names, units=units, opts=opts)
    phase = _phase(opts, search=True)
    l1 = jnp.asarray([L1], jnp.float32)

    def run():
        out = _optimize.run(f, state, masks, l1, l1, 1.0, x, logp, steps=steps, phase=phase,
                            loop=loop)
        return jax.block_until_ready(out)

    out = run()  # compile
    first = float(out["history"][0, 0, 0])
    start = time.perf_counter()
    run()
    return steps / (time.perf_counter() - start), first


def main(steps: int) -> None:
    model, variables = data.pretrained(progress=False)
    f = jp.as_function(model, variables)
    d = data.load_digits()
    y = np.asarray(d.y_test)
    region = np.concatenate([np.flatnonzero(y == c)[:10] for c in (3, 8)])
    x = jnp.asarray(d.x_test[region])
    results = {"device": f"CPU ({platform.processor() or platform.machine()}, "
                         f"{os.cpu_count()} cores)", "steps": steps,
               "torch": torch.__version__, "jax": jax.__version__,
               "torch_threads": torch.get_num_threads()}
    # torch's OpenMP threads spin-wait; on a shared, loaded CPU one thread can be far faster than
    # the default, so both are measured and the faster one is the reference.
    default_threads = torch.get_num_threads()
    per_threads = {}
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        per_threads[threads], torch_first = torch_loop(variables["params"], x, steps)
    torch.set_num_threads(default_threads)
    results["torch_steps_per_s_by_threads"] = per_threads
    results["torch_steps_per_s"] = max(per_threads.values())
    for loop in ("unrolled", "scan"):
        results[f"jax_{loop}_steps_per_s"], jax_first = jax_loop(f, x, steps, loop)
    results["first_loss"] = {"jax": jax_first, "torch": torch_first}
    assert abs(jax_first - torch_first) < 1e-4 * max(1.0, abs(torch_first)), results
    for loop in ("unrolled", "scan"):
        results[f"ratio_{loop}_vs_torch"] = (results[f"jax_{loop}_steps_per_s"]
                                             / results["torch_steps_per_s"])
    out = os.path.join(os.path.dirname(__file__), "..", "results", "bench_subnet_cpu.json")
    with open(out, "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"device: {results['device']}")
    for threads, rate in per_threads.items():
        print(f"torch {torch.__version__} eager, {threads} thread(s): {rate:.1f} steps/s")
    for loop in ("unrolled", "scan"):
        print(f"jaxplain ({loop}): {results[f'jax_{loop}_steps_per_s']:.1f} steps/s, ratio "
              f"{results[f'ratio_{loop}_vs_torch']:.2f}x the faster torch setting")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    main(parser.parse_args().steps)
