"""Benchmark: the automatic chunk of ``batch_size=None`` against one pass, steady state on CPU.

``batch_size=None`` used to fold every IG step, SmoothGrad sample, occlusion window and
deletion copy into one pass. It now picks a chunk (:mod:`jaxplain.core._chunks`): all items on
GPU/TPU, on CPU as many as keep a pass's values within a cache-sized budget. The old default is
forced here by passing ``batch_size=<all items>``. For the digits CNN, a ResNet-18-style Flax
net (width 16) at 64 px and a 4-block ViT at 32 px, each method is compiled both ways, the two
results are checked to agree, and then timed in paired rounds (one call of each per round, the
order alternating, so a load change on a shared machine hits both); the table gives each side's
fastest round and the median per-round ratio.

    python experiments/bench/chunks.py [--batch 32] [--deletion-images 128] [--rounds 3]
        [--models digits,resnet18,vit]

Writes ``experiments/results/bench_chunks_cpu.md``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jp
from jaxplain.data import digits_function
from jaxplain import attribution as A
from jaxplain import metrics
from jaxplain.core import _chunks


class Block(nn.Module):
    ch: int
    stride: int

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(self.ch, (3, 3), (self.stride, self.stride), padding=1, use_bias=False)(x)
        h = nn.relu(nn.BatchNorm(use_running_average=True)(h))
        h = nn.BatchNorm(use_running_average=True)(
            nn.Conv(self.ch, (3, 3), padding=1, use_bias=False)(h))
        if self.stride != 1 or x.shape[-1] != self.ch:
            x = nn.BatchNorm(use_running_average=True)(
                nn.Conv(self.ch, (1, 1), (self.stride, self.stride), use_bias=False)(x))
        return nn.relu(h + x)


class ResNet18(nn.Module):
    width: int = 16

    @nn.compact
    def __call__(self, x):
        w = self.width
        x = nn.Conv(w, (7, 7), (2, 2), padding=3, use_bias=False)(x)
        x = nn.max_pool(nn.relu(nn.BatchNorm(use_running_average=True)(x)), (3, 3), (2, 2),
                        padding=((1, 1), (1, 1)))
        for ch, s in [(w, 1), (w, 1), (2 * w, 2), (2 * w, 1), (4 * w, 2), (4 * w, 1),
                      (8 * w, 2), (8 * w, 1)]:
            x = Block(ch, s)(x)
        return nn.Dense(10)(x.mean(axis=(1, 2)))


class Encoder(nn.Module):
    dim: int

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=4)(h, h)
        h = nn.Dense(self.dim)(nn.gelu(nn.Dense(2 * self.dim)(nn.LayerNorm()(x))))
        return x + h


class ViT(nn.Module):
    dim: int = 64

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.dim, (4, 4), (4, 4))(x)
        x = x.reshape(x.shape[0], -1, self.dim)
        x = x + self.param("pos", nn.initializers.normal(0.02), (1, x.shape[1], self.dim))
        for _ in range(4):
            x = Encoder(self.dim)(x)
        return nn.Dense(10)(nn.LayerNorm()(x).mean(axis=1))


def model(name: str):
    """``(f, size, channels, window)``: the model function, its input and occlusion window."""
    if name == "digits":
        return digits_function(progress=False), 8, 1, 2
    net, size = (ResNet18(), 64) if name == "resnet18" else (ViT(), 32)
    variables = net.init(jax.random.key(0), jnp.zeros((1, size, size, 3)))
    return jp.as_function(net, variables), size, 3, 8 if name == "resnet18" else 4


def jobs(f, x, t, window, deletion_images):
    """``{method: (call with batch_size, the items of one pass)}``."""
    key = jax.random.key(0)
    windows = (x.shape[1] // window) ** 2
    xd = jax.random.uniform(jax.random.key(2), (deletion_images,) + x.shape[1:])
    td = jnp.argmax(f(xd), -1)
    a = A.gradient(f, xd, td)
    return {
        "IG-50": (lambda b: A.integrated_gradients(f, x, t, steps=50, batch_size=b), 50),
        "smoothgrad-16": (lambda b: A.smoothgrad(f, x, t, key=key, samples=16, batch_size=b), 16),
        f"occlusion ({windows} windows)": (lambda b: A.occlusion(
            f, x, t, window=(window, window), stride=window, batch_size=b), windows),
        f"deletion 50 steps x {xd.shape[0]}": (lambda b: metrics.deletion(
            f, xd, td, a, steps=50, batch_size=b).values, xd.shape[0] * 51),
    }


def seconds(call) -> float:
    start = time.perf_counter()
    jax.block_until_ready(call())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--deletion-images", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="digits,resnet18,vit")
    parser.add_argument("--out", default="experiments/results/bench_chunks_cpu.md")
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        f, size, channels, window = model(name)
        x = jax.random.uniform(jax.random.key(1), (args.batch, size, size, channels))
        t = jnp.argmax(f(x), -1)
        for method, (call, items) in jobs(f, x, t, window, args.deletion_images).items():
            first = {"one pass": seconds(lambda: call(items)), "auto": seconds(lambda: call(None))}
            one, auto = np.asarray(call(items)), np.asarray(call(None))
            error = float(np.abs(auto - one).max() / np.abs(one).max())
            times = {"one pass": [], "auto": []}
            for r in range(args.rounds):
                for side in (("one pass", "auto") if r % 2 == 0 else ("auto", "one pass")):
                    times[side].append(seconds(lambda: call(items if side == "one pass" else None)))
            ratio = statistics.median(o / a for o, a in zip(times["one pass"], times["auto"]))
            row = (name, method, min(times["one pass"]) * 1e3, min(times["auto"]) * 1e3, ratio,
                   first["one pass"], first["auto"], error)
            rows.append(row)
            print("%-9s %-28s one pass %8.1f ms  auto %8.1f ms  %5.2fx  first %.2f s / %.2f s"
                  "  rel diff %.1e" % row, flush=True)
    lines = [
        "# `batch_size=None`: one pass vs the automatic chunk (CPU)",
        "",
        f"Device: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__} ({jax.default_backend()}); budget "
        f"{_chunks.BUDGET // 2 ** 20} MiB of values per pass.",
        f"Command: `python experiments/bench/chunks.py --batch {args.batch} --deletion-images "
        f"{args.deletion_images} --rounds {args.rounds} --models {args.models}`",
        "",
        f"Steady state, batch of {args.batch} images: each side's fastest of {args.rounds} paired "
        "rounds, the median per-round speed-up, the first call (compilation included) and the "
        "largest difference relative to the largest attribution.",
        "",
        "| model | method | one pass (ms) | auto (ms) | speed-up | first call one pass / auto "
        "(s) | rel. diff |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += ["| %s | %s | %.1f | %.1f | %.2fx | %.2f / %.2f | %.1e |" % row for row in rows]
    pathlib.Path(args.out).write_text("\n".join(lines) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
