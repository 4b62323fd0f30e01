"""threshold, select and pathway_gradient warn (once, naming how many examples) when an
example's pathway is empty (its largest scores tie at the percentile); not otherwise, and not
inside jit."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import pathways

EMPTY = "keep=0.2 kept no unit for"


def _record(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [str(w.message) for w in caught if EMPTY in str(w.message)]


def test_tied_scores_warn_once_naming_the_examples():
    rng = np.random.default_rng(0)
    scores = {"a": jnp.asarray(rng.random((3, 10)), jnp.float32),
              "b": jnp.asarray(rng.random((3, 5)), jnp.float32)}
    # Example 1: every gate the same value (all decayed alike); example 2: all zero.
    scores = {n: v.at[1].set(0.81).at[2].set(0.0) for n, v in scores.items()}
    masks, caught = _record(pathways.threshold, scores, keep=0.2)
    kept = np.asarray(pathways.kept_fraction(masks))
    assert kept[0] > 0 and kept[1] == kept[2] == 0  # the property the warning reports
    assert len(caught) == 1 and "for 2 of 3 examples" in caught[0] and "steps" in caught[0]


def test_distinct_scores_do_not_warn_and_jit_skips_the_check():
    scores = {"a": jnp.asarray(np.random.default_rng(1).random((4, 20)), jnp.float32)}
    masks, caught = _record(pathways.threshold, scores, keep=0.2)
    assert not caught and np.all(np.asarray(pathways.kept_fraction(masks)) > 0)
    tied = {"a": jnp.full((4, 20), 0.5)}
    jitted, caught = _record(jax.jit(lambda s: pathways.threshold(s, keep=0.2)), tied)
    assert not caught
    eager, caught = _record(pathways.threshold, tied, keep=0.2)
    assert caught and np.array_equal(np.asarray(jitted["a"]), np.asarray(eager["a"]))


W = jnp.asarray([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0]])


def f(x):
    return jax.nn.relu(x @ W) @ jnp.asarray([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


@pytest.mark.parametrize("method", ["select", "pathway_gradient"])
def test_select_warns_for_an_example_whose_units_are_all_dead(method):
    # Example 1's activations are all 0: every contribution is 0.
    x = jnp.asarray([[1.0, 0.5], [0.0, 0.0], [2.0, 1.0]])
    assert not np.any(np.asarray(x[1] @ W) > 0)
    out, caught = _record(getattr(pathways, method), f, x, 0, keep=0.2)
    assert len(caught) == 1 and "for 1 of 3 examples" in caught[0]
    masks = pathways.select(f, x[::2], 0, keep=0.2)  # the live examples alone: no warning
    _, caught = _record(pathways.select, f, x[::2], 0, keep=0.2)
    assert not caught and np.all(np.asarray(pathways.kept_fraction(masks)) > 0)
