"""Equinox models as users wrap them: a module in a static field, eqx.filter_jit and
eqx.filter_vmap of a module, a bound method, a module that takes the batch itself, and layers
tied by eqx.nn.Shared. Each keeps the sites and outputs of the plain module."""

import warnings
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution

K = jax.random.split(jax.random.key(0), 4)
X = jax.random.normal(K[3], (3, 4))


def _names(f, x=X):
    return [s.name for s in jp.sites(f, x)]


def _seq():
    return eqx.nn.Sequential([eqx.nn.Linear(4, 6, key=K[0]), eqx.nn.Lambda(jax.nn.relu),
                              eqx.nn.Linear(6, 3, key=K[1])])


class _Static(eqx.Module):
    lin: eqx.nn.Linear
    act: Callable = eqx.field(static=True)

    def __call__(self, x):
        return self.act(self.lin(x))


def test_a_module_in_a_static_field_runs_unnamed():
    model = _Static(eqx.nn.Linear(4, 3, key=K[0]), eqx.nn.Lambda(jax.nn.relu))
    f = jp.as_function(model)
    np.testing.assert_allclose(f(X), jax.vmap(model)(X), rtol=1e-6)
    assert _names(f) == ["lin", "relu"]


@pytest.mark.parametrize("wrap", [eqx.filter_jit, eqx.filter_vmap,
                                  lambda m: eqx.filter_jit(eqx.filter_vmap(m)),
                                  lambda m: eqx.filter_vmap(eqx.filter_jit(m))],
                         ids=["jit", "vmap", "jit_vmap", "vmap_jit"])
def test_a_wrapped_module_keeps_its_names_and_outputs(wrap):
    seq = _seq()
    plain, wrapped = jp.as_function(seq), jp.as_function(wrap(seq))
    assert _names(wrapped) == _names(plain)
    np.testing.assert_allclose(wrapped(X), plain(X), rtol=1e-6)
    _, acts = jp.capture(wrapped, "layers/1/relu")(X)
    np.testing.assert_allclose(acts["layers/1/relu"], jax.nn.relu(jax.vmap(seq[0])(X)), rtol=1e-6)


def test_a_filter_vmap_wrapper_is_a_function_of_the_batch_with_its_own_axes():
    seq = _seq()
    f = jp.as_function(eqx.filter_vmap(seq, out_axes=1))  # (features, batch): as written
    np.testing.assert_allclose(f(X), jax.vmap(seq)(X).T, rtol=1e-6)


class _Feats(eqx.Module):
    lin: eqx.nn.Linear
    head: eqx.nn.Linear

    def features(self, x):
        return jax.nn.relu(self.lin(x))

    def __call__(self, x):
        return self.head(self.features(x))


def test_a_bound_method_is_named_as_in_its_module():
    model = _Feats(eqx.nn.Linear(4, 5, key=K[0]), eqx.nn.Linear(5, 3, key=K[1]))
    for f in (jp.as_function(model.features), jp.as_function(eqx.filter_jit(model.features))):
        assert _names(f) == [n for n in _names(jp.as_function(model)) if n != "head"]
        np.testing.assert_allclose(f(X), jax.vmap(model.features)(X), rtol=1e-6)


class _TakesTheBatch(eqx.Module):
    mlp: eqx.nn.MLP

    def __call__(self, x):
        return jax.vmap(self.mlp)(x)


def test_a_module_that_takes_the_batch_gets_one_per_example_false_hint():
    model = _TakesTheBatch(eqx.nn.MLP(4, 3, 8, 1, key=K[0]))
    for run in (lambda f: attribution.gradient(f, X, 0), lambda f: jp.sites(f, X)):
        with pytest.raises(ValueError, match="could not be evaluated") as info:
            run(jp.as_function(model))
        assert str(info.value).count("per_example=False") == 1
    expected = attribution.gradient(jp.as_function(model, per_example=False), X, 0)
    np.testing.assert_allclose(expected, attribution.gradient(jp.as_function(model.mlp), X, 0),
                               rtol=1e-6)


def test_a_model_that_fails_on_the_batch_too_gets_no_such_hint():
    model = _TakesTheBatch(eqx.nn.MLP(5, 3, 8, 1, key=K[0]))  # 5 features, x has 4
    with pytest.raises(ValueError, match="could not be evaluated") as info:
        jp.sites(jp.as_function(model), X)
    assert "per_example=False" not in str(info.value)


class _Tied(eqx.Module):
    shared: eqx.nn.Shared
    head: eqx.nn.Linear

    def __init__(self):
        a, b = eqx.nn.Linear(4, 4, key=K[0]), eqx.nn.Linear(4, 4, key=K[1])
        self.shared = eqx.nn.Shared((a, b), lambda p: p[1].weight, lambda p: p[0].weight.T)
        self.head = eqx.nn.Linear(4, 3, key=K[2])

    def __call__(self, x):
        a, b = self.shared()
        return self.head(jax.nn.relu(b(jax.nn.relu(a(x)))))


def test_layers_tied_by_shared_are_sites_and_the_wrapper_is_none():
    model = _Tied()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        names = _names(jp.as_function(model))
    assert names == ["shared/pytree/0", "relu", "shared/pytree/1", "relu_1", "head"]
    a, b = model.shared()
    _, acts = jp.capture(jp.as_function(model), "shared/pytree/1")(X)
    np.testing.assert_allclose(acts["shared/pytree/1"], jax.vmap(b)(jax.nn.relu(jax.vmap(a)(X))),
                               rtol=1e-5)


class _Twice(eqx.Module):
    block: eqx.nn.Sequential

    def __call__(self, x):
        return self.block(jnp.tanh(self.block(x)))


def test_a_module_called_twice_is_still_reported():
    model = _Twice(eqx.nn.Sequential([eqx.nn.Linear(4, 4, key=K[0]), eqx.nn.Lambda(jax.nn.relu)]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "block" in _names(jp.as_function(model))
    assert any("'block' looks entered 2 times" in str(w.message) for w in caught)
