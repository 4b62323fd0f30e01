"""Loops over the unroll budget: rules that cannot act inside them are reported."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution
from jaxplain.core import _program


def _recurrence():
    """A tanh recurrence over 8 steps (48 equations in all), the step under a named scope."""
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    w_in, w_h, w_out = (jax.random.normal(k1, (3, 5)), jax.random.normal(k2, (5, 5)) * 0.4,
                        jax.random.normal(k3, (5, 2)))

    def f(x):  # (batch, 8, 3)
        def step(h, x_t):
            with jax.named_scope("cell"):
                return jnp.tanh(x_t @ w_in + h @ w_h), None
        h, _ = jax.lax.scan(step, jnp.zeros((x.shape[0], 5)), jnp.swapaxes(x, 0, 1))
        return h @ w_out

    return f, jax.random.normal(jax.random.key(1), (2, 8, 3))


def test_rules_inside_a_loop_over_the_budget_are_reported(monkeypatch):
    monkeypatch.setattr(_program, "UNROLL_BUDGET", 10)
    f, x = _recurrence()
    with pytest.warns(UserWarning, match=r"loop 'cell'.*UNROLL_BUDGET \(10\).*not applied"):
        attribution.deeplift(f, x, 0)


def test_a_loop_within_the_budget_is_unrolled_without_a_warning():
    f, x = _recurrence()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dl = attribution.deeplift(f, x, jnp.array([0, 1]))
    gap = f(x)[jnp.arange(2), jnp.array([0, 1])] - f(jnp.zeros_like(x))[jnp.arange(2), jnp.array([0, 1])]
    np.testing.assert_allclose(dl.sum((1, 2)), gap, rtol=1e-4)  # summation to delta holds


def test_a_step_of_a_loop_over_the_budget_is_refused_saying_why(monkeypatch):
    monkeypatch.setattr(_program, "UNROLL_BUDGET", 10)
    f, x = _recurrence()
    with pytest.raises(ValueError, match="'cell/3' lies inside a `scan` loop too long to unroll"):
        jp.capture(f, "cell/3")(x)
