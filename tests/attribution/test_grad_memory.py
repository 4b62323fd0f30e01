"""Differentiating a chunked attribution (training through an explanation) keeps the memory that
``batch_size`` bounds: the compiled gradient's temporaries do not grow with the steps or samples
(the chunk loops rematerialize their bodies), and its values are plain JAX's."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A

RNG = np.random.default_rng(0)
PARAMS = {"w1": jnp.asarray(RNG.normal(size=(3, 3, 1, 8)) * 0.5, jnp.float32),
          "w2": jnp.asarray(RNG.normal(size=(3, 3, 8, 8)) * 0.2, jnp.float32),
          "w3": jnp.asarray(RNG.normal(size=(8, 3)), jnp.float32)}
X = jnp.asarray(RNG.uniform(size=(2, 16, 16, 1)), jnp.float32)
TARGET = jnp.array([0, 2])
KEY = jax.random.key(3)


def _conv(h, w):
    return jax.lax.conv_general_dilated(h, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _model(params, x):
    """A smooth CNN (tanh: its second derivative is not zero), logits ``(n, 3)``."""
    h = jnp.tanh(_conv(jnp.tanh(_conv(x, params["w1"])), params["w2"]))
    return h.mean(axis=(1, 2)) @ params["w3"]


def _target_gradient(f, z):
    return jax.grad(lambda v: f(v)[jnp.arange(z.shape[0]), TARGET].sum())(z)


def _ig(f, x, items, batch_size):
    return A.integrated_gradients(f, x, TARGET, steps=items, batch_size=batch_size)


def _ig_reference(f, x, items):
    """Gauss-Legendre IG from a zero baseline, one step at a time."""
    nodes, weights = np.polynomial.legendre.leggauss(items)
    grads = jax.vmap(lambda a: _target_gradient(f, a * x))(jnp.asarray(0.5 * (1 + nodes)))
    return x * jnp.tensordot(jnp.asarray(0.5 * weights), grads, 1)


def _smoothgrad(f, x, items, batch_size):
    return A.smoothgrad(f, x, TARGET, key=KEY, samples=items, batch_size=batch_size)


def _smoothgrad_reference(f, x, items):
    """The mean gradient at ``x + sigma * eps_k``, ``sigma`` 0.15 of each example's range."""
    span = x.max(axis=(1, 2, 3), keepdims=True) - x.min(axis=(1, 2, 3), keepdims=True)
    noisy = lambda k: x + 0.15 * span * jax.random.normal(k, x.shape)  # noqa: E731
    return jax.vmap(lambda k: _target_gradient(f, noisy(k)))(jax.random.split(KEY, items)).mean(0)


METHODS = {"integrated_gradients": (_ig, _ig_reference),
           "smoothgrad": (_smoothgrad, _smoothgrad_reference)}


def _loss(method, wrt, items, batch_size=None):
    """The squared attribution summed, as a function of `x` or of the model's parameters."""
    if wrt == "x":
        f = functools.partial(_model, PARAMS)
        return lambda x: (method(f, x, items, batch_size) ** 2).sum()
    return lambda params: (method(functools.partial(_model, params), X, items, batch_size)
                           ** 2).sum()


def _temp_bytes(fn, arg) -> int:
    return jax.jit(jax.grad(fn)).lower(arg).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("wrt", ["x", "params"])
def test_gradient_memory_does_not_grow_with_the_items(name, wrt):
    method, _ = METHODS[name]
    arg = X if wrt == "x" else PARAMS
    few, many = (_temp_bytes(_loss(method, wrt, items, batch_size=4), arg) for items in (8, 64))
    assert many < 1.5 * few, (f"{name}: the gradient's temporaries grew from {few} bytes at 8 "
                              f"items to {many} at 64 with batch_size=4")


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("wrt", ["x", "params"])
def test_gradient_of_the_chunked_method_equals_plain_jax(name, wrt):
    method, reference = METHODS[name]
    arg = X if wrt == "x" else PARAMS
    chunked = jax.grad(_loss(method, wrt, 8, batch_size=4))(arg)  # two chunks: a loop
    plain = jax.grad(_loss(lambda f, x, items, _: reference(f, x, items), wrt, 8))(arg)
    for got, want in zip(jax.tree.leaves(chunked), jax.tree.leaves(plain)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
