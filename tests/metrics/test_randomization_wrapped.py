"""randomization_check looks through eqx.filter_jit / filter_vmap wrappers: the layers are the
module's own and every state equals that of the plain module."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain.metrics import randomization_check


def _mlp(key):
    k1, k2 = jax.random.split(key)
    return eqx.nn.Sequential([eqx.nn.Linear(5, 6, key=k1), eqx.nn.Lambda(jax.nn.relu),
                              eqx.nn.Linear(6, 3, key=k2)])


def _grad(f, x, t):
    return jax.grad(lambda x: f(x)[jnp.arange(len(x)), t].sum())(x)


@pytest.mark.parametrize("wrap, kwargs", [(eqx.filter_jit, {}),
                                          (eqx.filter_vmap, {}),
                                          (lambda m: eqx.filter_jit(eqx.filter_vmap(m)), {})])
def test_a_wrapped_module_is_randomized_layer_by_layer(wrap, kwargs):
    x = jax.random.normal(jax.random.key(2), (4, 5))
    run = lambda m: randomization_check(m, None, x, _grad, key=jax.random.key(1),  # noqa: E731
                                        stdev=0.1, **kwargs)
    plain, wrapped = run(_mlp(jax.random.key(0))), run(wrap(_mlp(jax.random.key(0))))
    assert wrapped.states == plain.states == ("layers/2", "layers/0")  # top layer first
    np.testing.assert_allclose(wrapped.spearman, plain.spearman, atol=1e-6)
