"""`sum_leading`: the sum over the leading axis, as a product with ones for floating arrays (the
form XLA:CPU runs fast), the plain sum otherwise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain.core._cpu import sum_leading


@pytest.mark.parametrize("shape", [(50, 4, 6, 6, 3), (1, 7), (3,), (5, 0, 2)])
def test_it_equals_the_sum_over_the_first_axis(shape):
    a = np.random.default_rng(0).normal(size=shape)
    got = jax.jit(sum_leading)(jnp.asarray(a, jnp.float32))
    assert got.shape == shape[1:] and got.dtype == jnp.float32
    np.testing.assert_allclose(got, a.sum(axis=0), rtol=1e-5, atol=1e-5)


def test_integers_sum_exactly():
    a = jnp.arange(60, dtype=jnp.int32).reshape(5, 3, 4)
    np.testing.assert_array_equal(sum_leading(a), np.asarray(a).sum(axis=0))


def test_gradients_and_vmap():
    a = jnp.asarray(np.random.default_rng(1).normal(size=(3, 5, 2)), jnp.float32)
    np.testing.assert_allclose(jax.grad(lambda v: (sum_leading(v) ** 2).sum())(a),
                               jax.grad(lambda v: (v.sum(0) ** 2).sum())(a), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(sum_leading)(a), a.sum(axis=1), rtol=1e-6)


def test_the_compiled_sum_is_a_product_not_a_reduction():
    hlo = jax.jit(sum_leading).lower(jnp.ones((50, 32, 16, 16, 16))).compile().as_text()
    assert " dot(" in hlo and " reduce(" not in hlo
