"""Tiny JAX networks and their PyTorch twins (same weights) for agreement with Captum and Zennit.

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


# activation name -> (JAX function, torch module class name, its keyword arguments)
ACTIVATIONS = {
    "relu": (jax.nn.relu, "ReLU", {}),
    "tanh": (jnp.tanh, "Tanh", {}),
    "sigmoid": (jax.nn.sigmoid, "Sigmoid", {}),
    "gelu": (lambda x: jax.nn.gelu(x, approximate=False), "GELU", {}),
    "gelu_tanh": (jax.nn.gelu, "GELU", {"approximate": "tanh"}),
    "silu": (jax.nn.silu, "SiLU", {}),
}


def mlp(params, *, bias=True, activation="relu"):
    """An MLP ``x -> logits`` (ReLU or another of ``ACTIVATIONS``) as a plain JAX function
    (hashable, stable identity)."""
    layers = [(jnp.asarray(w), jnp.asarray(b) if bias else None) for w, b in params]
    h = ACTIVATIONS[activation][0]

    def f(x):
        for k, (w, b) in enumerate(layers):
            x = x @ w
            if b is not None:
                x = x + b
            if k < len(layers) - 1:
                x = h(x)
        return x

    return f


def cnn_params(seed: int, channels=2, classes=5, *, batchnorm=False):
    """Weights of :func:`cnn`; with `batchnorm`, inference-mode BatchNorm statistics after each
    convolution as ``(scale, shift, mean, var)``."""
    rng = np.random.default_rng(seed)
    params = {
        "conv1": (rng.normal(0, 0.5, (3, 3, channels, 4)).astype(np.float32),
                  rng.normal(0, 0.1, (4,)).astype(np.float32)),
        "conv2": (rng.normal(0, 0.3, (3, 3, 4, 6)).astype(np.float32),
                  rng.normal(0, 0.1, (6,)).astype(np.float32)),
        "dense": (rng.normal(0, 0.3, (2 * 2 * 6, classes)).astype(np.float32),
                  rng.normal(0, 0.1, (classes,)).astype(np.float32)),
    }
    if batchnorm:
        for name, c in (("bn1", 4), ("bn2", 6)):
            params[name] = tuple(v.astype(np.float32) for v in (
                rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.3, c),
                rng.uniform(0.5, 2.0, c)))
    return params


def _pool(x, kind, window=(1, 2, 2, 1)):
    if kind == "max":
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, window, "VALID")
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, window, window, "VALID") / 4.0


BN_EPS = 1e-5  # torch's BatchNorm2d default


def cnn(params, *, pool="max", last_pool="avg", layout="NHWC"):
    """conv3x3 - [bn] - relu - pool2 - conv3x3 - [bn] - relu - pool2 - dense on (n, 8, 8, C)
    NHWC; `pool` and `last_pool` are ``"max"`` or ``"avg"``, BatchNorm where `params` has it.
    With ``layout="NCHW"`` the same network on (n, C, 8, 8) images, written as the torch twin
    is (OIHW kernels, per-channel constants on axis 1, channels moved last to flatten)."""
    p = {k: tuple(jnp.asarray(v) for v in vs) for k, vs in params.items()}
    nchw = layout == "NCHW"
    dn = ("NCHW", "OIHW", "NCHW") if nchw else ("NHWC", "HWIO", "NHWC")
    window = (1, 1, 2, 2) if nchw else (1, 2, 2, 1)

    def per_channel(v):
        return v[:, None, None] if nchw else v

    def block(x, conv, bn):
        w, b = p[conv]
        w = w.transpose(3, 2, 0, 1) if nchw else w
        x = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn) + per_channel(b)
        if bn in p:
            scale, shift, mean, var = map(per_channel, p[bn])
            x = (x - mean) * (scale * jax.lax.rsqrt(var + BN_EPS)) + shift
        return jax.nn.relu(x)

    def f(x):
        x = _pool(block(x, "conv1", "bn1"), pool, window)
        x = _pool(block(x, "conv2", "bn2"), last_pool, window)
        x = x.transpose(0, 2, 3, 1) if nchw else x
        w, b = p["dense"]
        return x.reshape(x.shape[0], -1) @ w + b

    return f


def torch_mlp(params, *, activation="relu"):
    import torch

    layers = []
    for k, (w, b) in enumerate(params):
        lin = torch.nn.Linear(*w.shape)
        lin.weight.data = torch.tensor(w.T.copy())
        lin.bias.data = torch.tensor(b)
        layers.append(lin)
        if k < len(params) - 1:
            _, name, kwargs = ACTIVATIONS[activation]
            layers.append(getattr(torch.nn, name)(**kwargs))
    return torch.nn.Sequential(*layers).eval()


def torch_cnn(params, *, pool="max", last_pool="avg"):
    """The twin of :func:`cnn`; modules are registered in forward order (as Zennit's
    SequentialMergeBatchNorm canonizer expects)."""
    import torch

    def conv(name):
        w, b = params[name]
        layer = torch.nn.Conv2d(w.shape[2], w.shape[3], 3, padding=1)
        layer.weight.data = torch.tensor(w.transpose(3, 2, 0, 1).copy())
        layer.bias.data = torch.tensor(b)
        return layer

    def batchnorm(name):
        scale, shift, mean, var = params[name]
        layer = torch.nn.BatchNorm2d(len(scale), eps=BN_EPS)
        layer.weight.data, layer.bias.data = torch.tensor(scale), torch.tensor(shift)
        layer.running_mean.data, layer.running_var.data = torch.tensor(mean), torch.tensor(var)
        return layer

    def pooling(kind):
        return torch.nn.MaxPool2d(2) if kind == "max" else torch.nn.AvgPool2d(2)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = conv("conv1")
            self.bn1 = batchnorm("bn1") if "bn1" in params else torch.nn.Identity()
            self.relu1 = torch.nn.ReLU()
            self.pool1 = pooling(pool)
            self.conv2 = conv("conv2")
            self.bn2 = batchnorm("bn2") if "bn2" in params else torch.nn.Identity()
            self.relu2 = torch.nn.ReLU()
            self.pool2 = pooling(last_pool)
            wd, bd = params["dense"]
            self.dense = torch.nn.Linear(*wd.shape)
            self.dense.weight.data = torch.tensor(wd.T.copy())
            self.dense.bias.data = torch.tensor(bd)

        def forward(self, x):
            x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
            x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
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
