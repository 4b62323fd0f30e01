"""neuron_conductance's unit: integer scalars of any kind, negative indices, one compile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain.attribution import _site, layer_conductance, neuron_conductance

RNG = np.random.default_rng(0)
W = jnp.asarray(RNG.normal(size=(3, 4)).astype(np.float32))
K = jnp.asarray(RNG.normal(0, 0.5, (3, 3, 1, 2)).astype(np.float32))
X = jnp.asarray(RNG.normal(size=(2, 3)).astype(np.float32))
XI = jnp.asarray(RNG.normal(size=(2, 4, 3, 1)).astype(np.float32))


def dense(x):
    with jax.named_scope("hidden"):
        h = jnp.tanh(x @ W)
    return h @ W.T


def conv(x):
    with jax.named_scope("relu"):
        h = jax.nn.relu(jax.lax.conv_general_dilated(x, K, (1, 1), "SAME",
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC")))
    return h.mean(axis=(1, 2))


def _nc(f, x, neuron, site="hidden"):
    return np.asarray(neuron_conductance(f, x, 1, site=site, neuron=neuron, steps=6))


@pytest.mark.parametrize("neuron", [np.int64(2), jnp.int32(2), np.array(2), (2,), [np.int32(2)],
                                    jnp.argmax(jnp.array([0.0, 0.0, 1.0, 0.0])), np.array([2]),
                                    -2, (-2,)])
def test_integer_scalars_index_arrays_and_negatives_pick_the_same_unit(neuron):
    np.testing.assert_array_equal(_nc(dense, X, neuron), _nc(dense, X, 2))


def test_negative_indices_count_from_the_end_in_an_index_tuple():
    np.testing.assert_array_equal(_nc(conv, XI, (-1, -2, -1), "relu"),
                                  _nc(conv, XI, (3, 1, 1), "relu"))
    np.testing.assert_array_equal(_nc(conv, XI, -1, "relu"), _nc(conv, XI, 4 * 3 * 2 - 1, "relu"))


@pytest.mark.parametrize("neuron", [4, -5, (4,), True, 2.0, jnp.float32(2), (1, 2), "2"])
def test_out_of_range_and_non_integer_units_are_refused(neuron):
    with pytest.raises(ValueError, match="neuron"):
        _nc(dense, X, neuron)


def test_a_traced_unit_is_refused_clearly():
    with pytest.raises(TypeError, match="neuron must be concrete"):
        jax.jit(lambda n: neuron_conductance(dense, X, 1, site="hidden", neuron=n, steps=4))(2)


def test_a_loop_over_units_compiles_once_and_each_unit_sums_to_its_conductance():
    neuron_conductance(conv, XI, 0, site="relu", neuron=0, steps=6)
    compiled = _site._neuron_conductance._cache_size()
    cond = np.asarray(layer_conductance(conv, XI, 0, site="relu", steps=6))
    for unit in [(0, 0, 1), (3, 2, 0), (1, 1, 1), 5]:
        got = neuron_conductance(conv, XI, 0, site="relu", neuron=unit, steps=6)
        index = np.unravel_index(unit, cond.shape[1:]) if isinstance(unit, int) else unit
        np.testing.assert_allclose(np.asarray(got).sum(axis=(1, 2, 3)), cond[(slice(None), *index)],
                                   rtol=1e-4, atol=1e-6)
    assert _site._neuron_conductance._cache_size() == compiled
