"""ResNet-50 with random weights, twice: a plain JAX function (NHWC) and a PyTorch twin (NCHW)
with the same weights, for the GPU benchmarks (attribution, pathways).

The torchvision layout (Bottleneck blocks [3, 4, 6, 3], stride on the 3x3 convolution), He-normal
weights, no BatchNorm and no biases (random-weight timing only); 49 ReLU call sites, each its own
``nn.ReLU`` module in the twin. With ``zennit_sums=True`` the twin adds each residual through its
own ``zennit.layer.Sum`` module, so that Zennit's presets apply their Norm rule there (and at
the global average pool, an ``nn.AdaptiveAvgPool2d``), as jaxplain's LRP composites do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

RESNET50 = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))


def resnet50_params(key, classes=1000):
    def he(k, shape):
        return np.asarray(jax.random.normal(k, shape) * np.sqrt(2.0 / np.prod(shape[:-1])), np.float32)

    keys = iter(jax.random.split(key, 80))
    p = {"stem": he(next(keys), (7, 7, 3, 64)), "blocks": []}
    cin = 64
    for width, depth, stride in RESNET50:
        for i in range(depth):
            blk = {"a": he(next(keys), (1, 1, cin, width)), "b": he(next(keys), (3, 3, width, width)),
                   "c": he(next(keys), (1, 1, width, 4 * width)) * 0.2,
                   "stride": stride if i == 0 else 1}
            if i == 0:
                blk["down"] = he(next(keys), (1, 1, cin, 4 * width))
            p["blocks"].append(blk)
            cin = 4 * width
    p["fc"] = he(next(keys), (cin, classes))
    return p


def resnet50_jax(p):
    def conv(x, w, stride=1):
        k = w.shape[0]
        return jax.lax.conv_general_dilated(x, jnp.asarray(w), (stride, stride), [(k // 2, k // 2)] * 2,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def f(x):
        x = jax.nn.relu(conv(x, p["stem"], 2))
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                                  [(0, 0), (1, 1), (1, 1), (0, 0)])
        for blk in p["blocks"]:
            h = jax.nn.relu(conv(x, blk["a"]))
            h = jax.nn.relu(conv(h, blk["b"], blk["stride"]))
            h = conv(h, blk["c"])
            skip = conv(x, blk["down"], blk["stride"]) if "down" in blk else x
            x = jax.nn.relu(h + skip)
        return x.mean(axis=(1, 2)) @ jnp.asarray(p["fc"])

    return f


class TorchResNet50(nn.Module):
    """The same network in PyTorch, one ``nn.ReLU`` module per call site (49)."""

    def __init__(self, p, zennit_sums: bool = False):
        super().__init__()
        if zennit_sums:
            from zennit.layer import Sum

        def conv(w, stride=1):
            c = nn.Conv2d(w.shape[2], w.shape[3], w.shape[0], stride, w.shape[0] // 2, bias=False)
            c.weight.data = torch.tensor(w).permute(3, 2, 0, 1).contiguous()
            return c

        self.stem = conv(p["stem"], 2)
        self.blocks = nn.ModuleList()
        for blk in p["blocks"]:
            m = nn.Module()
            m.a, m.b, m.c = conv(blk["a"]), conv(blk["b"], blk["stride"]), conv(blk["c"])
            m.down = conv(blk["down"], blk["stride"]) if "down" in blk else None
            m.sum = Sum() if zennit_sums else None
            self.blocks.append(m)
        self.fc = nn.Linear(*p["fc"].shape, bias=False)
        self.fc.weight.data = torch.tensor(p["fc"]).T.contiguous()
        self.relus = nn.ModuleList([nn.ReLU() for _ in range(1 + 3 * len(p["blocks"]))])
        self.pool = nn.AdaptiveAvgPool2d(1)  # a module, so that Zennit's presets see it

    def forward(self, x):
        r = iter(self.relus)
        x = next(r)(self.stem(x))
        x = nn.functional.max_pool2d(x, 3, 2, 1)
        for m in self.blocks:
            h = next(r)(m.a(x))
            h = next(r)(m.b(h))
            h = m.c(h)
            skip = m.down(x) if m.down is not None else x
            x = next(r)(h + skip if m.sum is None else m.sum(torch.stack([h, skip], dim=-1)))
        return self.fc(self.pool(x).flatten(1))
