"""Small models and a plain gradient shared by the metrics tests."""

import jax
import jax.numpy as jnp
import numpy as np


def tiny_cnn(seed=0, classes=4):
    """A 3x3 VALID convolution (2 -> 5 channels), ReLU and a dense head on (n, 8, 8, 2)."""
    rng = np.random.default_rng(seed)
    k = jnp.asarray(rng.normal(size=(3, 3, 2, 5)) * 0.5, jnp.float32)
    w = jnp.asarray(rng.normal(size=(5 * 36, classes)) * 0.2, jnp.float32)

    def f(x):
        h = jax.lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.relu(h).reshape(len(x), -1) @ w

    return f


def grad(f, x, t):
    """The gradient of each example's target output, shaped like `x`."""
    return jax.grad(lambda x: f(x)[jnp.arange(len(x)), t].sum())(x)
