"""randomization_check's caches are keyed on the model's code and the method's NumPy arrays
too: a helper or global redefined between calls (a re-run notebook cell), or a baseline edited
in place, gives the result of a fresh process (``jaxplain.clear_caches()`` then the same call),
never the old one."""

from __future__ import annotations

import functools

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain as jp
from jaxplain import attribution as A
from jaxplain import metrics
from jaxplain.metrics import _rebuilt as rebuilt
from tests._traces import counting

X = jax.random.normal(jax.random.key(0), (4, 6))
T = jnp.array([0, 1, 2, 0])
WIDTH = 8


def act(h):
    return jax.nn.relu(h)


def _tanh(h):  # the helper redefined
    return jnp.tanh(h)


class _Linen(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="head")(act(nn.Dense(WIDTH, name="hidden")(x)))


class _Eqx(eqx.Module):
    l1: eqx.nn.Linear
    l2: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.l1, self.l2 = eqx.nn.Linear(6, 8, key=k1), eqx.nn.Linear(8, 3, key=k2)

    def __call__(self, x):
        return self.l2(act(self.l1(x)))


class _Nnx(nnx.Module):
    def __init__(self):
        self.l1 = nnx.Linear(6, 8, rngs=nnx.Rngs(0))
        self.l2 = nnx.Linear(8, 3, rngs=nnx.Rngs(1))

    def __call__(self, x):
        return self.l2(act(self.l1(x)))


def _built(kind):
    if kind == "linen":
        model = _Linen()
        return model, model.init(jax.random.key(1), X)
    return (_Eqx(jax.random.key(1)) if kind == "eqx" else _Nnx()), None


def _check(model, variables, method=A.gradient, **options):
    options = {"key": jax.random.key(2), "target": T, **options}
    r = metrics.randomization_check(model, variables, X, method, **options)
    return [np.asarray(r.spearman), np.asarray(r.spearman_abs)]


def _fresh(call):
    """`call()` as a fresh process computes it: every cache emptied first."""
    jp.clear_caches()
    return call()


def _same(a, b):
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("kind", ["linen", "eqx", "nnx"])
def test_a_redefined_helper_of_call_is_not_served_from_the_cache(kind, monkeypatch):
    _check(*_built(kind), stdev=0.5)  # cached with act = relu
    assert rebuilt.code_key(_built(kind)[0], "equinox" if kind == "eqx" else kind) is not None
    monkeypatch.setitem(globals(), "act", _tanh)  # the notebook cell redefining act
    got = _check(*_built(kind), stdev=0.5)
    _same(got, _fresh(lambda: _check(*_built(kind), stdev=0.5)))


def test_a_numpy_baseline_edited_in_place_is_seen():
    model, variables = _built("linen")
    base = np.zeros(X.shape, np.float32)
    method = functools.partial(A.integrated_gradients, baseline=base, steps=8)
    _check(model, variables, method, stdev=0.5)
    base[...] = 1.0
    got = _check(model, variables, method, stdev=0.5)
    ones = functools.partial(A.integrated_gradients, baseline=jnp.ones(X.shape), steps=8)
    _same(got, _fresh(lambda: _check(model, variables, ones, stdev=0.5)))


def test_default_fresh_weights_follow_a_global_of_the_models_code(monkeypatch):
    _check(*_built("linen"))  # model.init compiled with WIDTH = 8
    monkeypatch.setitem(globals(), "WIDTH", 16)
    model, variables = _built("linen")
    assert variables["params"]["hidden"]["kernel"].shape == (6, 16)
    got = _check(model, variables)  # was: "fresh must have the architecture of model"
    _same(got, _fresh(lambda: _check(model, variables)))


_SEEN: list = []  # a mutable global: code reading it has no key


class _Unkeyable(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(8)(x)
        return nn.Dense(3)(jnp.tanh(h) if _SEEN else jax.nn.relu(h))


def test_a_model_whose_code_has_no_key_is_not_cached():
    model = _Unkeyable()
    variables = model.init(jax.random.key(1), X)
    _check(model, variables)
    _SEEN.append(1)  # changes the model's output in place: nothing cached may serve it
    got = _check(model, variables)
    _same(got, _fresh(lambda: _check(model, variables)))
    _SEEN.clear()


@pytest.mark.parametrize("kind", ["linen", "eqx", "nnx"])
def test_a_repeated_call_traces_nothing(kind):
    base = np.zeros(X.shape, np.float32)
    method = functools.partial(A.integrated_gradients, baseline=base, steps=8)
    model, variables = _built(kind)
    _check(model, variables, method, stdev=0.5)
    base[...] = 0.5  # a new value of a traced option: the same program
    with counting() as counts:
        _check(model, variables, method, stdev=0.5)
    assert counts.traces == 0
