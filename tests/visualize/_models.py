"""Tiny plain-function models for the visualization tests (fixed random weights)."""

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DN)


def tiny_cnn(seed: int = 0):
    """conv(3x3, 1->4) -> relu -> conv(3x3, 4->6) -> relu_1 -> global mean -> head (10).

    Sites: conv1, relu, conv2, relu_1, head. Fully convolutional up to a global mean, so any
    image size works.
    """
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    w1 = jax.random.normal(k1, (3, 3, 1, 4)) * 0.6
    w2 = jax.random.normal(k2, (3, 3, 4, 6)) * 0.3
    w3 = jax.random.normal(k3, (6, 10))

    def f(x):
        with jax.named_scope("conv1"):
            h = _conv(x, w1)
        h = jax.nn.relu(h)
        with jax.named_scope("conv2"):
            h = _conv(h, w2)
        h = jax.nn.relu(h)
        with jax.named_scope("head"):
            y = jnp.mean(h, axis=(1, 2)) @ w3
        return y

    return f


def digits_images(n: int | None = None) -> np.ndarray:
    """sklearn's digits as float32 NHWC in [0, 1]."""
    x = load_digits().images.astype(np.float32)[..., None] / 16.0
    return x if n is None else x[:n]
