"""A model function that reads its weights from a global updated by a training step that donates
them (``jax.jit(step, donate_argnums=0)``, the usual optax pattern): the old arrays are deleted.
The next trace of the function warns with ``ChangedWeightsWarning``, as when the weights are
replaced without donation, and a trace cached with the deleted arrays is traced again, so the
verbs explain the weights the function reads now. Before: "The model could not be evaluated
... Array has been deleted" at a new shape, and a bare ``RuntimeError`` from
integrated_gradients, capture and intervene at a shape traced before."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution as A
from jaxplain.core import ChangedWeightsWarning

_X = jax.random.normal(jax.random.key(1), (5, 6))
_STEP = jax.jit(lambda w: w * 0.9, donate_argnums=0)


def _trained():
    """``(f, state)``: f reads ``state["w"]``; f is traced once, then a donating step runs."""
    state = {"w": jax.random.normal(jax.random.key(0), (6, 4))}
    f = lambda z: jnp.tanh(z @ state["w"])  # noqa: E731 - the pattern under test
    A.gradient(f, _X, 0)
    old = state["w"]
    state["w"] = _STEP(state["w"])
    assert old.is_deleted()
    return f, state


def test_a_new_shape_after_a_donated_step_warns_and_explains_the_new_weights():
    f, state = _trained()
    fresh = lambda z: jnp.tanh(z @ state["w"])  # noqa: E731
    with pytest.warns(ChangedWeightsWarning):
        grad = A.gradient(f, _X[:3], 0)
    np.testing.assert_allclose(grad, A.gradient(fresh, _X[:3], 0), rtol=1e-6)


@pytest.mark.parametrize("verb", ["integrated_gradients", "capture", "intervene"])
def test_a_shape_traced_before_is_traced_again_with_the_new_weights(verb):
    f, state = _trained()
    fresh = lambda z: jnp.tanh(z @ state["w"])  # noqa: E731
    run = {
        "integrated_gradients": lambda g: A.integrated_gradients(g, _X, 0, steps=4),
        "capture": lambda g: jp.capture(g, "tanh")(_X)[1]["tanh"],
        "intervene": lambda g: jp.intervene(g, {"tanh": lambda v: 2 * v})(_X),
    }[verb]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ChangedWeightsWarning)
        got = run(f)
    np.testing.assert_allclose(got, run(fresh), rtol=1e-5, atol=1e-6)
