"""Tiny JAX networks and their PyTorch twins (same weights) for agreement with Captum.

The JAX networks are plain functions of NHWC batches; the torch twins take NCHW batches and
flatten in NHWC order, so both compute the same numbers. Torch is imported lazily: tests that
need it skip when it is not installed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def mlp_params(seed: int, sizes=(10, 16, 12, 5)):
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, 1 / np.sqrt(i), (i, o)).astype(np.float32),
             rng.normal(0, 0.1, (o,)).astype(np.float32)) for i, o in zip(sizes[:-1], sizes[1:])]


def mlp(params, *, bias=True):
    """A ReLU MLP ``x -> logits`` as a plain JAX function (hashable, stable identity)."""
    layers = [(jnp.asarray(w), jnp.asarray(b) if bias else None) for w, b in params]

    def f(x):
        for k, (w, b) in enumerate(layers):
            x = x @ w
            if b is not None:
                x = x + b
            if k < len(layers) - 1:
                x = jax.nn.relu(x)
        return x

    return f


def cnn_params(seed: int, channels=2, classes=5):
    rng = np.random.default_rng(seed)
    return {
        "conv1": (rng.normal(0, 0.5, (3, 3, channels, 4)).astype(np.float32),
                  rng.normal(0, 0.1, (4,)).astype(np.float32)),
        "conv2": (rng.normal(0, 0.3, (3, 3, 4, 6)).astype(np.float32),
                  rng.normal(0, 0.1, (6,)).astype(np.float32)),
        "dense": (rng.normal(0, 0.3, (2 * 2 * 6, classes)).astype(np.float32),
                  rng.normal(0, 0.1, (classes,)).astype(np.float32)),
    }


def _pool(x, kind):
    window = (1, 2, 2, 1)
    if kind == "max":
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, window, "VALID")
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, window, window, "VALID") / 4.0


def cnn(params, *, pool="max"):
    """conv3x3 - relu - pool2 - conv3x3 - relu - avgpool2 - dense on (n, 8, 8, C) NHWC."""
    p = {k: (jnp.asarray(w), jnp.asarray(b)) for k, (w, b) in params.items()}
    dn = ("NHWC", "HWIO", "NHWC")

    def f(x):
        w, b = p["conv1"]
        x = jax.nn.relu(jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn) + b)
        x = _pool(x, pool)
        w, b = p["conv2"]
        x = jax.nn.relu(jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn) + b)
        x = _pool(x, "avg")
        w, b = p["dense"]
        return x.reshape(x.shape[0], -1) @ w + b

    return f


def torch_mlp(params):
    import torch

    layers = []
    for k, (w, b) in enumerate(params):
        lin = torch.nn.Linear(*w.shape)
        lin.weight.data = torch.tensor(w.T.copy())
        lin.bias.data = torch.tensor(b)
        layers.append(lin)
        if k < len(params) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).eval()


def torch_cnn(params, *, pool="max"):
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            w1, b1 = params["conv1"]
            w2, b2 = params["conv2"]
            wd, bd = params["dense"]
            self.conv1 = torch.nn.Conv2d(w1.shape[2], w1.shape[3], 3, padding=1)
            self.conv1.weight.data = torch.tensor(w1.transpose(3, 2, 0, 1).copy())
            self.conv1.bias.data = torch.tensor(b1)
            self.relu1 = torch.nn.ReLU()
            self.pool1 = torch.nn.MaxPool2d(2) if pool == "max" else torch.nn.AvgPool2d(2)
            self.conv2 = torch.nn.Conv2d(w2.shape[2], w2.shape[3], 3, padding=1)
            self.conv2.weight.data = torch.tensor(w2.transpose(3, 2, 0, 1).copy())
            self.conv2.bias.data = torch.tensor(b2)
            self.relu2 = torch.nn.ReLU()
            self.pool2 = torch.nn.AvgPool2d(2)
            self.dense = torch.nn.Linear(*wd.shape)
            self.dense.weight.data = torch.tensor(wd.T.copy())
            self.dense.bias.data = torch.tensor(bd)

        def forward(self, x):
            x = self.pool1(self.relu1(self.conv1(x)))
            x = self.pool2(self.relu2(self.conv2(x)))
            return self.dense(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1))

    return Net().eval()


def to_torch(x):
    """NHWC numpy/JAX batch -> NCHW torch tensor (2-D batches pass through)."""
    import torch

    x = np.asarray(x)
    if x.ndim == 4:
        x = x.transpose(0, 3, 1, 2)
    return torch.tensor(np.ascontiguousarray(x))


def from_torch(t):
    x = t.detach().numpy()
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


def relative_error(a, ref):
    """Max over examples of max|a - ref| / max|ref| per example."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
    scale = np.maximum(np.abs(ref).max(axis=1), 1e-12)
    return float((np.abs(a - ref).max(axis=1) / scale).max())


def inputs(seed: int, shape, kind: str):
    """A float32 batch: ``"signed"`` normal values or ``"nonneg"`` uniform values in [0, 1]."""
    rng = np.random.default_rng(seed + 100)
    x = rng.normal(size=shape) if kind == "signed" else rng.uniform(size=shape)
    return x.astype(np.float32)
