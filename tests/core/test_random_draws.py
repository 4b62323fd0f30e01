"""A model function that draws random numbers (a Dropout left on through a call-time train flag,
a constant key inside f) gets one StochasticModelWarning: its key is a constant of f, so every
explanation is that of one fixed draw. jaxplain's own noise, drawn outside f, does not count."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain as jp
from jaxplain import attribution as A
from jaxplain import metrics as M

_K = jax.random.split(jax.random.key(0), 4)
_X = jax.random.normal(_K[0], (4, 6))
_W = jax.random.normal(_K[1], (6, 3))


class _NNXDrop(nnx.Module):
    def __init__(self, rngs):
        self.lin1 = nnx.Linear(6, 16, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.lin2 = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x, train: bool = True):  # the flag wins over as_function's eval()
        return self.lin2(self.drop(jax.nn.relu(self.lin1(x)), deterministic=not train))


class _EqxDrop(eqx.Module):
    lin: eqx.nn.Linear
    drop: eqx.nn.Dropout

    def __call__(self, x):  # one example
        return self.drop(self.lin(x), key=jax.random.key(7))


def _eqx_drop(inference: bool):
    return _EqxDrop(eqx.nn.Linear(6, 3, key=_K[2]), eqx.nn.Dropout(0.5, inference=inference))


def _noisy(x):  # plain JAX: noise from a constant key inside f
    return (x + jax.random.normal(jax.random.key(3), x.shape)) @ _W


def _legacy_key(x):  # a raw uint32 key (random_wrap, then random_bits)
    return (x * jax.random.bernoulli(jax.random.PRNGKey(3), 0.5, x.shape)) @ _W


def _in_loop(x):  # the draw inside a loop body, which the traced program keeps one node
    def step(i, h):
        return h * jax.random.bernoulli(jax.random.fold_in(jax.random.key(5), i), 0.9, h.shape)
    return jax.lax.fori_loop(0, 3, step, x) @ _W


def _linear(x):
    return jax.nn.relu(x @ _W)


def _draw_warnings(record) -> list:
    return [w for w in record if issubclass(w.category, jp.core.StochasticModelWarning)]


def _record(run):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        run()
    return _draw_warnings(record)


_DRAWING = {
    "nnx_train_flag": lambda: jp.as_function(_NNXDrop(nnx.Rngs(0))),
    "eqx_dropout": lambda: jp.as_function(_eqx_drop(inference=False)),
    "plain_key": lambda: _noisy,
    "legacy_key": lambda: _legacy_key,
    "loop": lambda: _in_loop,
}


@pytest.mark.parametrize("model", list(_DRAWING))
def test_a_model_that_draws_random_numbers_warns_once_at_the_callers_line(model):
    f = _DRAWING[model]()
    np.testing.assert_array_equal(f(_X), f(_X))  # one frozen draw: why it is worth a warning
    warned = _record(lambda: (A.gradient(f, _X, 0), A.integrated_gradients(f, _X, 0, steps=4),
                              jp.sites(f, _X)))
    assert len(warned) == 1
    assert warned[0].filename == __file__
    assert "train=False" in str(warned[0].message)


def test_the_nnx_model_with_its_flag_passed_does_not_warn_and_matches_eval_mode():
    model = _NNXDrop(nnx.Rngs(0))
    g_eval = jax.grad(lambda x: model(x, train=False)[:, 0].sum())(_X)
    f = jp.as_function(model, train=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", jp.core.StochasticModelWarning)
        np.testing.assert_allclose(A.gradient(f, _X, 0), g_eval, atol=1e-6)
    # without the flag: the gradient of one dropout mask, not the eval-mode one, and a warning
    with pytest.warns(jp.core.StochasticModelWarning):
        g = A.gradient(jp.as_function(model), _X, 0)
    assert not np.allclose(g, g_eval, atol=1e-3)


@pytest.mark.parametrize("make", [
    lambda: jp.as_function(eqx.nn.inference_mode(_eqx_drop(inference=False))),
    lambda: jp.as_function(_eqx_drop(inference=True)),
    lambda: _linear,
    lambda: jp.intervene(_linear, {"relu": lambda v: v + jax.random.normal(_K[3], v.shape)}),
], ids=["eqx_inference_mode", "eqx_inference", "plain", "noise_edit"])
def test_a_deterministic_model_or_a_noise_edit_does_not_warn(make):
    f = make()
    assert _record(lambda: (A.gradient(f, _X, 0), jp.sites(f, _X))) == []


_METHODS = {
    "smoothgrad": lambda f: A.smoothgrad(f, _X, 0, key=_K[3], samples=2),
    "gradient_shap": lambda f: A.gradient_shap(f, _X, 0, key=_K[3], baselines=jnp.zeros((2, 6)),
                                               samples=2, stdev=0.1),
    "shapley_sampling": lambda f: A.shapley_sampling(f, _X, 0, key=_K[3], samples=2),
    "kernel_shap": lambda f: A.kernel_shap(f, _X, 0, key=_K[3], samples=8),
    "lime": lambda f: A.lime(f, _X, 0, key=_K[3], samples=8),
    "infidelity": lambda f: M.infidelity(f, _X, 0, _X, key=_K[3], samples=2),
    "max_sensitivity": lambda f: M.max_sensitivity(f, _X, 0, A.gradient, key=_K[3], samples=2),
    "continuity": lambda f: M.continuity(f, _X, 0, A.gradient, key=_K[3], samples=2),
    "local_lipschitz": lambda f: M.local_lipschitz(f, _X, 0, A.gradient, key=_K[3], samples=2),
    "faithfulness_correlation": lambda f: M.faithfulness_correlation(
        f, _X, 0, _X, key=_K[3], subset_size=2, samples=2),
    "monotonicity_correlation": lambda f: M.monotonicity_correlation(
        f, _X, 0, _X, key=_K[3], samples=2),
    "random_attribution": lambda f: M.random_attribution(_K[3])(f, _X, 0),
}


@pytest.mark.parametrize("method", list(_METHODS))
def test_a_methods_own_random_draws_do_not_warn(method):
    def f(x):  # a fresh function: nothing reported before
        return _linear(x)
    assert _record(lambda: _METHODS[method](f)) == []
