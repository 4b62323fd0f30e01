"""Kernel overhead: capture / intervene / rewrite_backward against the plain model and against
Flax's own `capture_intermediates`, under jit, on the digits CNN.

The kernel re-runs the model's own primitives, so once compiled a captured or intervened
function should cost what the model costs; capturing the module outputs should cost what Flax's
`capture_intermediates` costs; and calling a fresh `capture(f, names)` again in a loop should
reuse the compiled program. Each time is the median over rounds (the machine may be shared).
Prints the ratios and writes experiments/results/bench_kernel_<backend>.md.

    python experiments/bench/kernel.py [--batch 256] [--repeats 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp

import jaxplain as jp
from jaxplain import data


def timed(fn, x, repeats, rounds):
    """Median seconds per call of `fn(x)` after a warm-up call, and the first call's seconds."""
    start = time.perf_counter()
    jax.block_until_ready(fn(x))
    first = time.perf_counter() - start
    per_round = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            out = fn(x)
        jax.block_until_ready(out)
        per_round.append((time.perf_counter() - start) / repeats)
    return statistics.median(per_round), first


class _Identity:
    """A rule that asks for the plain gradient everywhere (it only adds the custom VJPs)."""

    def linear(self, layer, x, g):
        return jax.vjp(lambda v: layer(v), x)[1](g)[0]

    def activation(self, op, x, y, g):
        return g * (x > 0) if op == "relu" else None


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    model, variables = data.pretrained(progress=False)
    f = jp.as_function(model, variables)
    x = data.load_digits().x_test[: args.batch]
    relus = jp.core.relu_sites(f, x)
    modules = [s.name for s in jp.sites(f, x) if s.kind == "module"]
    flax_capture = jax.jit(lambda v: model.apply(variables, v, capture_intermediates=True))
    gate = jnp.ones(16)
    gated = jax.jit(lambda v, g: jp.intervene(f, {"block1/relu": lambda a: a * g})(v))
    # (name, function, baseline name): the ratio is against the baseline, measured in this run
    cases = [
        ("f (jit)", jax.jit(f), None),
        ("Flax capture_intermediates (jit)", flax_capture, "f (jit)"),
        ("capture(module sites)", jp.capture(f, modules), "Flax capture_intermediates (jit)"),
        ("capture(all relu sites)", jp.capture(f, relus), "f (jit)"),
        ("capture(f, relu sites) rebuilt on every call", lambda v: jp.capture(f, relus)(v),
         "capture(all relu sites)"),
        ("intervene(mask every relu site)",
         jp.intervene(f, {s: lambda v: v * 1.0 for s in relus}), "f (jit)"),
        ("jit(intervene(gate block1/relu)) with the gate an argument",
         lambda v: gated(v, gate), "f (jit)"),
        ("grad of f", jax.jit(jax.grad(lambda v: f(v)[:, 0].sum())), None),
        ("grad of rewrite_backward(f, identity rule)",
         jax.jit(jax.grad(lambda v: jp.rewrite_backward(f, _Identity())(v)[:, 0].sum())),
         "grad of f"),
    ]
    times = {}
    for name, fn, _ in cases:
        times[name] = timed(fn, x, args.repeats, args.rounds)
    device = jax.devices()[0].device_kind
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [f"# Kernel overhead on {device} ({os.cpu_count()} cores; load average {load}), "
             f"digits CNN, batch {args.batch}", "",
             f"Median of {args.rounds} rounds of {args.repeats} calls; the first call includes "
             "tracing and compilation.", "",
             "| function | ms per batch | first call (s) | vs | ratio |",
             "| --- | --- | --- | --- | --- |"]
    for name, _, base in cases:
        t, first = times[name]
        ratio = f"{t / times[base][0]:.2f}" if base else ""
        lines.append(f"| {name} | {1e3 * t:.3f} | {first:.2f} | {base or ''} | {ratio} |")
    text = "\n".join(lines)
    print(text)
    out = pathlib.Path(__file__).resolve().parents[1] / "results"
    (out / f"bench_kernel_{jax.default_backend()}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
