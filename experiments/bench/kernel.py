"""Kernel overhead: capture / intervene / rewrite_backward against the plain model, under jit.

The kernel re-runs the model's own primitives, so once compiled a captured or intervened
function should cost what the model costs. Prints the ratios and writes
experiments/results/bench_kernel_<device>.md.

    python experiments/bench/kernel.py [--batch 256] [--repeats 50]
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp

import jaxplain as jp
from jaxplain import data


def timed(fn, x, repeats):
    jax.block_until_ready(fn(x))
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(x)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    model, variables = data.pretrained(progress=False)
    f = jp.as_function(model, variables)
    x = data.load_digits().x_test[: args.batch]
    relus = jp.core.relu_sites(f, x)
    cases = {
        "f (jit)": jax.jit(f),
        "capture(all relu sites)": jp.capture(f, relus),
        "intervene(mask every relu site)": jp.intervene(f, {s: lambda v: v * 1.0 for s in relus}),
        "grad of f": jax.jit(jax.grad(lambda v: f(v)[:, 0].sum())),
        "grad of rewrite_backward(f, identity rule)": jax.jit(jax.grad(
            lambda v: jp.rewrite_backward(f, _Identity())(v)[:, 0].sum())),
    }
    times = {name: timed(fn, x, args.repeats) for name, fn in cases.items()}
    device = jax.devices()[0].device_kind
    lines = [f"# Kernel overhead on {device} (digits CNN, batch {args.batch})", "",
             "| function | ms per batch | ratio to its plain counterpart |", "| --- | --- | --- |"]
    for name, t in times.items():
        base = times["grad of f"] if name.startswith("grad") else times["f (jit)"]
        lines.append(f"| {name} | {1e3 * t:.3f} | {t / base:.2f} |")
    text = "\n".join(lines)
    print(text)
    out = pathlib.Path(__file__).resolve().parents[1] / "results" / f"bench_kernel_{jax.default_backend()}.md"
    out.write_text(text + "\n")


class _Identity:
    """A rule that asks for the plain gradient everywhere (it only adds the custom VJPs)."""

    def linear(self, layer, x, g):
        return jax.vjp(lambda v: layer(v), x)[1](g)[0]

    def activation(self, op, x, y, g):
        return g * (x > 0) if op == "relu" else None


if __name__ == "__main__":
    main()
