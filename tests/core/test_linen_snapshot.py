"""as_function snapshots what it is given: updating the caller's containers in place afterwards
(``variables["params"] = new``, a nested dict entry, a NumPy weight written through, a dict
passed as a keyword argument) changes neither ``f(x)`` nor a method's result.

The Linen adapter kept the caller's variables dict: after ``variables["params"] = new`` the
function followed the new weights while the methods' cached programs kept the old ones, and
integrated gradients mixed both in one call (completeness delta up to 0.9)."""

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain as jp
from jaxplain import attribution as A


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(nn.relu(nn.Dense(8)(x)))


X = jax.random.normal(jax.random.key(0), (3, 6))
T = jnp.array([0, 1, 2])
ROWS = jnp.arange(3)


def _variables(seed):
    """Plain (mutable) nested dicts, as a notebook keeps them."""
    return jax.tree.map(lambda a: a, _MLP().init(jax.random.key(seed), X))


def _rebind_params(v, new):
    v["params"] = new["params"]


def _rebind_layer(v, new):
    v["params"]["Dense_0"] = new["params"]["Dense_0"]


@pytest.mark.parametrize("update", [_rebind_params, _rebind_layer])
def test_linen_function_keeps_the_weights_it_was_built_on(update):
    model, old, new = _MLP(), _variables(1), _variables(2)
    expected = jax.tree.map(lambda a: a, old)  # the old weights, in containers of their own
    f = jp.as_function(model, old)
    A.gradient(f, X, T)  # a method's program, traced before the update
    update(old, new)
    assert not np.allclose(model.apply(old, X), model.apply(expected, X))  # the update is real

    np.testing.assert_allclose(f(X), model.apply(expected, X), rtol=1e-6)
    closed = jax.grad(lambda z: model.apply(expected, z)[ROWS, T].sum())(X)
    np.testing.assert_allclose(A.gradient(f, X, T), closed, rtol=1e-5, atol=1e-6)
    fresh = jp.as_function(model, expected)
    ig = A.integrated_gradients(f, X, T, steps=16)
    np.testing.assert_allclose(ig, A.integrated_gradients(fresh, X, T, steps=16),
                               rtol=1e-5, atol=1e-6)
    # one model throughout: IG's sum is the old model's gap up to the Riemann error
    gap = model.apply(expected, X)[ROWS, T] - model.apply(expected, jnp.zeros_like(X))[ROWS, T]
    np.testing.assert_allclose(ig.sum(1), gap, atol=0.05)


def test_linen_numpy_weights_written_in_place_do_not_leak():
    model = _MLP()
    variables = jax.tree.map(np.array, _variables(1))
    expected = model.apply(variables, X)
    f = jp.as_function(model, variables)
    variables["params"]["Dense_1"]["kernel"][...] = 0.0
    np.testing.assert_allclose(f(X), expected, rtol=1e-6)


class _Scaled(nn.Module):
    @nn.compact
    def __call__(self, x, scale):
        return nn.Dense(4)(x * scale["s"])


class _ScaledNNX(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(np.ones((6, 4), np.float32))  # a NumPy weight

    def __call__(self, x, scale):
        return (x * scale["s"]) @ self.w[...]


class _ScaledEqx(eqx.Module):
    w: dict  # a container field of a leaf module

    def __call__(self, x, scale):
        return (x * scale["s"]) @ self.w["k"]


def _linen():
    model = _Scaled()
    variables = model.init(jax.random.key(0), X, {"s": jnp.ones(6)})

    def update():
        variables["params"] = jax.tree.map(jnp.zeros_like, variables["params"])
    return model, {"variables": variables}, update


def _nnx():
    model = _ScaledNNX()

    def update():
        model.w[...][...] = 0.0  # through the NumPy array the Param holds
    return model, {}, update


def _equinox():
    model = _ScaledEqx({"k": jnp.ones((6, 4))})

    def update():
        model.w["k"] = jnp.zeros((6, 4))
    return model, {"per_example": False}, update


@pytest.mark.parametrize("build", [_linen, _nnx, _equinox])
def test_every_adapter_snapshots_weights_and_keyword_arguments(build):
    model, options, update_weights = build()
    scale = {"s": jnp.full(6, 2.0)}
    f = jp.as_function(model, scale=scale, **options)
    expected = f(X)
    scale["s"] = jnp.zeros(6)
    update_weights()
    np.testing.assert_allclose(f(X), expected, rtol=1e-6)
    assert not np.allclose(expected, 0.0)
