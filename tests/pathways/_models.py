"""Tiny test networks written twice: as a plain model function, and with explicit masks.

`forward(params, x, masks)` is the slow reference: it multiplies each post-ReLU value by its mask
by hand and also returns the pre-activations, so tests can read the masked network's ReLU sign
pattern without going through the kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def mlp_params(key, sizes=(20, 64, 64, 64, 5)):
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        (jax.random.normal(k, (a, b)) * (2.0 / a) ** 0.5, 0.1 * jax.random.normal(jax.random.fold_in(k, 1), (b,)))
        for k, a, b in zip(keys, sizes[:-1], sizes[1:])
    ]


def mlp_forward(params, x, masks=None):
    pre = []
    h = x
    for i, (w, b) in enumerate(params[:-1]):
        z = h @ w + b
        pre.append(z)
        h = jax.nn.relu(z)
        if masks is not None:
            h = h * masks[i]
    w, b = params[-1]
    return h @ w + b, pre


def cnn_params(key, channels=(1, 6, 6), classes=4, size=8):
    k = jax.random.split(key, 4)
    c0, c1, c2 = channels
    return {
        "w1": jax.random.normal(k[0], (3, 3, c0, c1)) * (2.0 / (9 * c0)) ** 0.5,
        "b1": 0.05 * jax.random.normal(k[1], (c1,)),
        "w2": jax.random.normal(k[2], (3, 3, c1, c2)) * (2.0 / (9 * c1)) ** 0.5,
        "w3": jax.random.normal(k[3], ((size // 2) ** 2 * c2, classes)) * 0.3,
    }


def _conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def cnn_forward(p, x, masks=None, residual=False):
    """conv-relu, conv(+skip)-relu, 2x2 average pool, dense; no max-pool (exactly piecewise affine)."""
    z1 = _conv(x, p["w1"]) + p["b1"]
    h1 = jax.nn.relu(z1)
    if masks is not None:
        h1 = h1 * masks[0]
    z2 = _conv(h1, p["w2"])
    if residual:
        z2 = z2 + h1  # identity skip; the mask of h1 applies to both routes
    h2 = jax.nn.relu(z2)
    if masks is not None:
        h2 = h2 * masks[1]
    n, hh, ww, c = h2.shape
    pooled = h2.reshape(n, hh // 2, 2, ww // 2, 2, c).mean(axis=(2, 4))
    return pooled.reshape(n, -1) @ p["w3"], [z1, z2]


def model(kind: str, seed: int):
    """Return (f, forward_with_masks, x) for one of the test networks."""
    key = jax.random.key(seed)
    kp, kx = jax.random.split(key)
    if kind == "mlp":
        params = mlp_params(kp)
        x = jax.random.normal(kx, (4, 20))
        fwd = lambda x, masks=None: mlp_forward(params, x, masks)  # noqa: E731
    elif kind in ("cnn", "resnet"):
        params = cnn_params(kp)
        x = jax.random.uniform(kx, (3, 8, 8, 1))
        fwd = lambda x, masks=None: cnn_forward(params, x, masks, residual=kind == "resnet")  # noqa: E731
    else:
        raise ValueError(kind)
    return (lambda x: fwd(x)[0]), fwd, x
