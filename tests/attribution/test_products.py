"""LRP and DeepLIFT on a model that multiplies two input-dependent values (gates): they warn
that their sums fail there, as they do; AttnLRP, whose uniform rule splits the product, conserves."""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution as A
from jaxplain.lrp import Epsilon

W1 = jnp.array([[1.0, 0.5], [2.0, -1.0]])
W2 = jnp.array([[3.0, 1.0], [-1.0, 0.5]])
X = jnp.array([[1.0, 1.0], [0.5, -2.0]])


def gated(x):
    return (x @ W1) * jax.nn.sigmoid(x @ W2)


def ungated(x):
    return jax.nn.relu(x @ W1) @ W2


@pytest.mark.parametrize("method", [
    lambda f: A.lrp(f, X, 0, rules=Epsilon(0.0)),
    lambda f: A.deeplift(f, X, 0),
    lambda f: A.deeplift_shap(f, X, 0, baselines=jnp.zeros((2, 2))),
])
def test_rules_that_pass_a_product_the_gradient_say_their_sums_fail(method):
    with pytest.warns(UserWarning, match=r"multiplies two values that both depend on x \('mul'"):
        a = method(gated)
    gap = gated(X)[:, 0] - gated(jnp.zeros_like(X))[:, 0]
    assert np.abs(np.asarray(a.sum(1) - gap)).max() > 1e-2  # what the warning says: no sum
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method(ungated)


def test_attn_lrp_splits_the_product_and_conserves_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = A.attn_lrp(gated, X, 0, epsilon=0.0)
    np.testing.assert_allclose(r.sum(1), gated(X)[:, 0], rtol=1e-5)


def test_an_lstm_s_gates_are_named():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(nn.RNN(nn.LSTMCell(4))(x)[:, -1])

    x = jax.random.normal(jax.random.key(0), (2, 3, 2))
    f = jp.as_function(Net(), Net().init(jax.random.key(1), x))
    with pytest.warns(UserWarning, match=r"deeplift: the model multiplies .*'RNN_0/LSTMCell_0/"):
        A.deeplift(f, x, 0)


def test_the_product_places_are_planned_once_per_program_and_rules(monkeypatch):
    from jaxplain.core import _backward
    plans = []
    real = _backward._plan
    monkeypatch.setattr(_backward, "_plan", lambda *a: plans.append(1) or real(*a))
    with pytest.warns(UserWarning, match="multiplies two values"):
        first = A.lrp(gated, X, 0, rules=Epsilon(0.0))
    for _ in range(3):  # an equal rule set: the places found before, the same warning
        with pytest.warns(UserWarning, match="multiplies two values"):
            np.testing.assert_array_equal(A.lrp(gated, X, 0, rules=Epsilon(0.0)), first)
    assert _backward.unruled_products(gated, X, Epsilon(0.0)) == ("mul",)
    counted = len(plans)
    _backward.unruled_products(gated, X, Epsilon(1.0))  # other rules: planned afresh
    assert len(plans) == counted + 1
    _backward.unruled_products(gated, X, Epsilon(0.0))
    assert len(plans) == counted + 1
