"""Gini sparseness, entropy complexity, completeness and conservation gaps."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxplain import metrics
from tests.metrics._reference import np_gini


def test_gini_of_known_vectors():
    a = jnp.array([[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0],
                   [-4.0, 3.0, -2.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(metrics.sparseness(a), [0.75, 0.0, 0.25, 0.25, 0.0], atol=1e-6)


# No subnormal floats: XLA:CPU flushes them to zero (a row of 3e-40 is all zeros to it, Gini 0),
# NumPy does not.
@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float32, (3, 7), elements=st.floats(-10, 10, width=32, allow_subnormal=False)))
def test_gini_matches_mean_absolute_difference(a):
    got = np.asarray(metrics.sparseness(jnp.asarray(a)))
    np.testing.assert_allclose(got, [np_gini(row) for row in a], atol=1e-5)


def test_complexity_is_the_entropy_of_fractions():
    a = np.random.default_rng(0).normal(size=(4, 2, 3, 1)).astype(np.float32)
    expected = [scipy.stats.entropy(np.abs(r).ravel()) for r in a]
    np.testing.assert_allclose(metrics.complexity(jnp.asarray(a)), expected, rtol=1e-5)
    np.testing.assert_allclose(metrics.complexity(jnp.ones((1, 16))), [np.log(16)], rtol=1e-6)
    # a zero map scores as a uniform one (log n), as sparseness scores both 0
    np.testing.assert_allclose(metrics.complexity(jnp.zeros((1, 5))), [np.log(5)], rtol=1e-6)


def test_completeness_and_conservation_gaps():
    w = jnp.array([[1.0, 2.0], [-3.0, 0.5], [2.0, 1.0]])
    b = jnp.array([0.7, -0.2])
    f = lambda x: x @ w + b  # noqa: E731
    x = jax.random.normal(jax.random.key(0), (4, 3))
    gxi = w[:, 1] * x                                    # exact for a linear model
    np.testing.assert_allclose(metrics.completeness(f, x, 1, gxi), 0.0, atol=1e-5)
    np.testing.assert_allclose(metrics.conservation(f, x, 1, gxi), 0.2 * np.ones(4), atol=1e-5)
    # f = x^2 (one feature): gradient x input = 2x^2 but f(x) - f(0) = x^2, a gap of x^2.
    sq = lambda x: jnp.concatenate([x**2, -x], 1)  # noqa: E731
    x1 = jnp.array([[1.5], [-2.0]])
    np.testing.assert_allclose(metrics.completeness(sq, x1, 0, 2 * x1**2), [2.25, 4.0],
                               rtol=1e-6)
    base = jnp.array([[1.0]])
    np.testing.assert_allclose(metrics.completeness(sq, x1, 0, 2 * x1**2, baseline=base),
                               [2 * 2.25 - 1.25, 8.0 - 3.0], rtol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="attribution must have a batch axis"):
        metrics.sparseness(jnp.ones(3))
    with pytest.raises(ValueError, match="attribution contains NaN"):
        metrics.complexity(jnp.array([[jnp.nan, 1.0]]))
    with pytest.raises(ValueError, match="baseline must be a number or an array"):
        metrics.completeness(lambda x: x, jnp.ones((1, 2)), 0, jnp.ones((1, 2)),
                             baseline="zeros")


def test_jit_and_vmap_equal_eager():
    a = jax.random.normal(jax.random.key(1), (3, 4, 4, 2))
    for fn in (metrics.sparseness, metrics.complexity):
        eager = fn(a)
        np.testing.assert_allclose(jax.jit(fn)(a), eager, rtol=1e-6)
        # vmap over a stack of batches gives each batch's values
        stacked = jax.vmap(fn)(jnp.stack([a, 2.0 * a[::-1]]))
        np.testing.assert_allclose(stacked[0], eager, rtol=1e-6)
        np.testing.assert_allclose(stacked[1], eager[::-1], rtol=1e-5)   # scale-invariant
    w = jnp.array([[1.0, 2.0], [-3.0, 0.5]])
    f = lambda x: jnp.tanh(x @ w)  # noqa: E731
    x = jax.random.normal(jax.random.key(2), (5, 2))
    r = jax.random.normal(jax.random.key(3), (5, 2))
    eager = metrics.completeness(f, x, 1, r, baseline=0.5)
    np.testing.assert_allclose(eager, r.sum(1) - (f(x)[:, 1] - f(jnp.full((1, 2), 0.5))[0, 1]),
                               rtol=1e-5)
    jitted = jax.jit(lambda x, r: metrics.completeness(f, x, 1, r, baseline=0.5))(x, r)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
