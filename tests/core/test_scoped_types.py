"""NNX and Equinox layers run under their named scopes as instances of their own classes: a
model that dispatches on ``isinstance(layer, ...)`` (an activation after the Linear layers only)
computes under ``as_function`` what it computes when called."""

import equinox as eqx
import jax
import numpy as np
import pytest
from flax import nnx

import jaxplain as jp
from jaxplain import attribution as A


class _NNXByType(nnx.Module):
    def __init__(self, rngs):
        self.layers = nnx.List([nnx.Linear(6, 16, rngs=rngs), nnx.BatchNorm(16, rngs=rngs),
                                nnx.Linear(16, 3, rngs=rngs)])

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
            if isinstance(layer, nnx.Linear) and layer is not self.layers[-1]:
                x = jax.nn.relu(x)
        return x


class _EqxByType(eqx.Module):
    layers: list

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.layers = [eqx.nn.Linear(6, 8, key=k1), eqx.nn.Linear(8, 3, key=k2)]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
            if type(layer).__name__ == "Linear" and isinstance(layer, eqx.nn.Linear) and (
                    layer is not self.layers[-1]):
                x = jax.nn.relu(x)
        return x


X = jax.random.normal(jax.random.key(1), (4, 6))


def test_an_nnx_model_dispatching_on_its_layers_types_runs_as_written():
    model = _NNXByType(nnx.Rngs(0))
    model.eval()
    f = jp.as_function(model)
    np.testing.assert_array_equal(f(X), model(X))
    want = jax.grad(lambda x: model(x)[:, 0].sum())(X)
    np.testing.assert_allclose(A.gradient(f, X, 0), want, rtol=1e-6, atol=1e-7)
    assert [s.name for s in jp.sites(f, X)] == ["layers/0", "relu", "layers/1", "layers/2"]
    assert type(model.layers[0]) is nnx.Linear  # the user's model is not changed


def test_an_equinox_model_dispatching_on_its_layers_types_runs_as_written():
    model = _EqxByType(jax.random.key(0))
    f = jp.as_function(model)
    np.testing.assert_array_equal(f(X), jax.vmap(model)(X))
    assert [s.name for s in jp.sites(f, X)] == ["layers/0", "relu", "layers/1"]
    assert type(model.layers[0]) is eqx.nn.Linear


def test_a_layer_reached_from_the_root_is_named_by_its_whole_path():
    class Inner(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(6, 6, rngs=rngs)

        def __call__(self, x):
            return jax.nn.relu(self.lin(x))

    class Outer(nnx.Module):
        def __init__(self, rngs):
            self.m = Inner(rngs)
            self.head = nnx.Linear(6, 2, rngs=rngs)

        def __call__(self, x):
            return self.head(self.m(x) + self.m.lin(x))  # inside m, then from the root

    model = Outer(nnx.Rngs(0))
    f = jp.as_function(model)
    np.testing.assert_allclose(f(X), model(X), rtol=1e-6)
    with pytest.warns(UserWarning, match="scope 'm/lin' looks entered 2 times"):
        names = [s.name for s in jp.sites(f, X)]  # the same scope from the root as inside m
    assert "m/lin" in names and "lin" not in names
    _, got = jp.capture(f, "m/relu")(X)
    np.testing.assert_allclose(got["m/relu"], jax.nn.relu(model.m.lin(X)), rtol=1e-6)
