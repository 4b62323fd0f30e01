"""randomization_check compiles once per model structure and method: a second call compiles
nothing, and every state's map is the method's on the model rebuilt from that state's weights."""

from __future__ import annotations

import functools

import equinox as eqx
import flax.linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A
from jaxplain import metrics
from jaxplain.metrics import _randomization as R
from jaxplain.metrics import _weights as W
from tests.core.models import Compiles


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv1")(x))
        return nn.Dense(3, name="head")(x.reshape(len(x), -1))


class _Mlp(nnx.Module):
    def __init__(self, seed):
        rngs = nnx.Rngs(seed)
        self.lin1 = nnx.Linear(6, 8, rngs=rngs)
        self.lin2 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, v):
        return self.lin2(nnx.relu(self.lin1(v)))


X = jax.random.uniform(jax.random.key(0), (4, 6, 6, 1))
V = jax.random.normal(jax.random.key(1), (4, 6))
# committed to the device, as restored checkpoints are (fresh weights are not: one program
# must serve both placements)
VARS = jax.device_put(_Net().init(jax.random.key(2), X), jax.devices()[0])


def _case(kind):
    """``(model, variables, x, options)`` of a small model of each kind."""
    if kind == "linen":
        return _Net(), VARS, X, {}
    if kind == "equinox":
        return eqx.nn.MLP(6, 3, 8, 1, key=jax.random.key(3)), None, V, {"stdev": 0.1}
    return _Mlp(3), None, V, {"fresh": _Mlp(4)}


def _loop(model, variables, x, method, *, key, mode="cascading", stdev=None, fresh=None):
    """The check as a loop over states: each model rebuilt (``weights.rebuild``), the method
    called on it as it is."""
    weights = W.model_weights(model, variables, {})
    chosen = W.layer_leaves(weights, None)
    f0 = weights.rebuild(list(weights.leaves))
    names = W.layer_order(weights, x, chosen)
    init_key, draw_key = jax.random.split(key)
    new = W.fresh_leaves(model, weights, fresh, x, init_key if stdev is None else draw_key,
                         stdev, chosen, {})
    target = jnp.argmax(f0(x), axis=-1)
    a0, axis = method(f0, x, target), R._channel_axis(f0, x)
    current, rows = list(weights.leaves), []
    for i, name in enumerate(reversed(names)):
        if mode == "independent":
            current = list(weights.leaves)
        for j, leaf in zip(chosen[name], new(name, i)):
            current[j] = leaf
        rows.append(R._similarities(a0, method(weights.rebuild(current), x, target), 5, axis))
    return R._result(tuple(reversed(names)), rows)


def _assert_equal(got, want):
    assert got.states == want.states
    for field in ("spearman", "spearman_abs", "ssim"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)


def _smoothgrad(seed):
    return functools.partial(A.smoothgrad, key=jax.random.key(seed), samples=3)


@pytest.mark.parametrize("kind, method, mode", [
    ("linen", A.gradient, "cascading"),
    ("linen", _smoothgrad(7), "independent"),
    ("linen", functools.partial(A.integrated_gradients, steps=4, batch_size=2), "cascading"),
    ("equinox", A.gradient, "independent"),
    ("nnx", _smoothgrad(7), "cascading"),
], ids=["linen-gradient", "linen-smoothgrad-independent", "linen-ig-batch_size",
        "equinox-gaussian-independent", "nnx-smoothgrad"])
def test_every_state_equals_the_method_on_the_rebuilt_model(kind, method, mode):
    model, variables, x, opts = _case(kind)
    key = jax.random.key(5)
    got = metrics.randomization_check(model, variables, x, method, key=key, mode=mode, **opts)
    _assert_equal(got, _loop(model, variables, x, method, key=key, mode=mode, **opts))


@pytest.mark.parametrize("kind", ["linen", "equinox", "nnx"])
def test_a_second_call_compiles_nothing(kind):
    model, variables, x, opts = _case(kind)
    check = functools.partial(metrics.randomization_check, model, key=jax.random.key(5), **opts)
    check(variables, x, A.gradient)
    check(variables, x, _smoothgrad(7))
    with Compiles() as compiles:
        jax.block_until_ready(check(variables, x, A.gradient))
    assert compiles.count == 0
    # a new keyed method, other inputs: still no compile, and the new key is used
    other = x[::-1]
    with Compiles() as compiles:
        got = check(variables, other, _smoothgrad(8))
        jax.block_until_ready(got)
    assert compiles.count == 0
    _assert_equal(got, _loop(model, variables, other, _smoothgrad(8), key=jax.random.key(5),
                             **opts))


def test_new_weights_of_the_same_structure_are_not_confused_with_the_old():
    key = jax.random.key(5)
    metrics.randomization_check(_Net(), VARS, X, A.gradient, key=key)
    other = jax.tree.map(lambda w: 1.5 * w[::-1] if w.ndim == 1 else -w, VARS)
    with Compiles() as compiles:
        got = metrics.randomization_check(_Net(), other, X, A.gradient, key=key)
        jax.block_until_ready(got)
    assert compiles.count == 0
    _assert_equal(got, _loop(_Net(), other, X, A.gradient, key=key))


def test_a_method_jax_cannot_trace_is_called_as_it_is():
    def numpy_gradient(f, x, t):
        return np.asarray(A.gradient(f, x, t))

    key = jax.random.key(5)
    got = metrics.randomization_check(_Net(), VARS, X, numpy_gradient, key=key)
    _assert_equal(got, _loop(_Net(), VARS, X, A.gradient, key=key))


def test_inside_a_users_jit_it_agrees_with_the_direct_call():
    key = jax.random.key(5)
    jitted = jax.jit(lambda v, x: metrics.randomization_check(_Net(), v, x, A.gradient, key=key))
    got, want = jitted(VARS, X), metrics.randomization_check(_Net(), VARS, X, A.gradient, key=key)
    assert got.states == want.states
    for field in ("spearman", "spearman_abs", "ssim"):
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-5,
                                   atol=1e-6, err_msg=field)
