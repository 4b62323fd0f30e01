"""neuron_conductance: one unit's share of the target's integrated gradients, per input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A

W1 = jax.random.normal(jax.random.key(0), (5, 4))
W2 = jax.random.normal(jax.random.key(1), (4, 3))


def f(x):
    with jax.named_scope("hidden"):
        h = jax.nn.relu(x @ W1)
    return h @ W2


X = jax.random.normal(jax.random.key(2), (3, 5))


@pytest.mark.parametrize("unit", range(4))
def test_summed_over_the_inputs_it_is_the_units_layer_conductance(unit):
    cond = A.neuron_conductance(f, X, 2, site="hidden", neuron=unit, steps=64)
    layer = A.layer_conductance(f, X, 2, site="hidden", steps=64)
    np.testing.assert_allclose(cond.sum(1), layer[:, unit], rtol=1e-5, atol=1e-6)


def test_the_units_sum_to_integrated_gradients_when_all_paths_pass_the_site():
    total = sum(A.neuron_conductance(f, X, 1, site="hidden", neuron=(j,), steps=64)
                for j in range(4))
    np.testing.assert_allclose(total, A.integrated_gradients(f, X, 1, steps=64), atol=1e-5)


def test_a_linear_unit_has_the_closed_form():
    """f = 2 h0 + h1, h0 = x0 + 3 x1: unit 0 conducts 2 (x - b) * (1, 3)."""
    g = lambda x: (x @ jnp.array([[1.0, 2.0], [3.0, -1.0]])) @ jnp.array([[2.0], [1.0]])  # noqa: E731
    x, b = jnp.array([[1.0, -2.0]]), jnp.array([[0.5, 0.5]])
    np.testing.assert_allclose(A.neuron_conductance(g, x, 0, site="linear", neuron=0,
                                                    baseline=b),
                               2 * (x - b) * jnp.array([1.0, 3.0]), rtol=1e-6)


def test_a_neuron_out_of_range_or_of_the_wrong_rank_is_a_clear_error():
    with pytest.raises(ValueError, match="out of range: the site has 4 units"):
        A.neuron_conductance(f, X, 0, site="hidden", neuron=4)
    with pytest.raises(ValueError, match=r"index tuple into one example's site value of shape"):
        A.neuron_conductance(f, X, 0, site="hidden", neuron=(0, 1))
