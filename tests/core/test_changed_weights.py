"""A function whose weights change in place between its traces (a closure over a dict of
parameters that training updates, the pattern of docs/kernel.md) warns once with
`ChangedWeightsWarning` when it is traced at a new shape: a method call could mix old and new
weights. Functions that make their own constants inside (equal at every trace) never warn."""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution
from jaxplain.core import ChangedWeightsWarning, StochasticModelWarning, _program
from tests import _reads


class Small(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.relu(nn.Dense(8)(x)))


SMALL = Small()
X = jax.random.normal(jax.random.key(0), (4, 5))
T = jnp.array([0, 1, 2, 0])
P1 = SMALL.init(jax.random.key(1), X)["params"]
P2 = SMALL.init(jax.random.key(2), X)["params"]


def _integrated(f):
    return attribution.integrated_gradients(f, X, T, steps=4)


def test_weights_updated_in_place_warn_once_at_the_users_line():
    state = {"params": P1}
    f = lambda z: SMALL.apply({"params": state["params"]}, z)  # noqa: E731 - the docs' pattern
    attribution.gradient(f, X, T)  # traced at the batch's shape with P1
    state["params"] = P2  # a training step
    with pytest.warns(ChangedWeightsWarning, match="changed since it was first traced") as record:
        mixed = _integrated(f)  # traces f at the folded steps' shape, with P2
    assert [w.filename for w in record] == [__file__]
    # what it warns about: the result is neither model's
    for params in (P1, P2):
        want = _integrated(lambda z, p=params: SMALL.apply({"params": p}, z))
        assert float(jnp.abs(mixed - want).max()) > 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChangedWeightsWarning)  # once per function
        jp.capture(f, "*relu*")(X[:3])  # another new shape
    jp.clear_caches()  # a fresh start: the same mistake warns again
    attribution.gradient(f, X, T)
    state["params"] = P1
    with pytest.warns(ChangedWeightsWarning):
        jp.capture(f, "*relu*")(X[:2])


def test_a_numpy_weight_changed_in_place_warns():
    w = np.ones((5, 3), np.float32)
    f = lambda z: jnp.tanh(z @ w)  # noqa: E731
    jp.capture(f, "tanh")(X)
    w[0, 0] = 2.0
    with pytest.warns(ChangedWeightsWarning):
        jp.capture(f, "tanh")(X[:2])


W = np.random.RandomState(0).rand(5, 3).astype(np.float32)
LEGIT = {  # constants made inside f: equal, but new objects, at every trace
    "np.ones inside f": lambda z: jnp.tanh(z * np.ones(5, np.float32)) @ W,
    "jnp.asarray of a NumPy array inside f": lambda z: jnp.tanh(z @ jnp.asarray(W)),
    "a draw from a fixed key inside f":
        lambda z: jnp.tanh(z @ jax.random.normal(jax.random.key(0), (5, 3))),
    "a constant shaped by the input": lambda z: jnp.tanh(z @ W + np.arange(z.shape[0])[:, None]),
    "as_function": jp.as_function(SMALL, {"params": P1}),
    "a closure over unchanged weights": lambda z: SMALL.apply({"params": P1}, z),
}


@pytest.mark.parametrize("name", LEGIT)
@pytest.mark.filterwarnings("ignore::jaxplain.core.StochasticModelWarning")
def test_constants_made_inside_f_do_not_warn(name):
    f = LEGIT[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChangedWeightsWarning)
        warnings.simplefilter("ignore", StochasticModelWarning)
        attribution.gradient(f, X, T)
        _integrated(f)  # traces f at another shape


def test_weights_are_compared_with_at_most_one_read():
    state = {"params": P1}
    f = lambda z: SMALL.apply({"params": state["params"]}, z)  # noqa: E731
    _program.trace(f, jax.ShapeDtypeStruct((4, 5), jnp.float32))
    with _reads.counting() as reads:  # the same arrays: nothing read
        _program.trace(f, jax.ShapeDtypeStruct((3, 5), jnp.float32))
    assert reads.waits == 0
    state["params"] = jax.tree.map(jnp.copy, P1)  # new arrays, equal values
    with warnings.catch_warnings(), _reads.counting() as reads:
        warnings.simplefilter("error", ChangedWeightsWarning)
        _program.trace(f, jax.ShapeDtypeStruct((2, 5), jnp.float32))
    assert reads.waits == 1 and reads.elements == 1  # one bool for all four
