"""learned_gates on float64 models: the best-loss carry follows the loss's dtype."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import pathways


def _mlp(dtype):
    w1 = jax.random.normal(jax.random.key(1), (6, 5), dtype)
    w2 = jax.random.normal(jax.random.key(2), (5, 3), dtype)
    return lambda x: jax.nn.relu(x @ w1) @ w2


def test_learned_gates_float64_model():
    with jax.enable_x64(True):
        f = _mlp(jnp.float64)
        x = jax.random.normal(jax.random.key(0), (4, 6), jnp.float64)
        gates = pathways.learned_gates(f, x, steps=10)
        assert set(gates) == {"relu"}
        assert gates["relu"].shape == (4, 5)
        assert np.isfinite(np.asarray(gates["relu"])).all()


def test_learned_gates_float32_input_float64_weights():
    with jax.enable_x64(True):
        f = _mlp(jnp.float64)
        x = jax.random.normal(jax.random.key(0), (4, 6), jnp.float32)
        gates = pathways.learned_gates(f, x, steps=10, retries=2)
        assert np.isfinite(np.asarray(gates["relu"])).all()


def test_learned_gates_uniform_init_under_x64():
    # uniform init draws float64 gates under x64 on a float32 model: the loss is float64 then
    with jax.enable_x64(True):
        f = _mlp(jnp.float32)
        x = jax.random.normal(jax.random.key(0), (4, 6), jnp.float32)
        gates = pathways.learned_gates(f, x, steps=10, init="uniform", key=jax.random.key(3))
        assert np.isfinite(np.asarray(gates["relu"])).all()
