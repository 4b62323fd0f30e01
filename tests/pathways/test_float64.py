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


def test_threshold_float64_scores_match_numpy_percentile():
    # Keys were built from the float32 rounding: ties within it were kept (1 + 1e-12 vs 1).
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        for scores, keep in (
                (np.r_[np.arange(1, 10) / 10, 1 + 1e-12, 1 + 2e-12], 0.2),
                (np.array([0.0, 0.1, 0.3, 0.3 + 1e-10, 0.5]), 0.5),
                (1.0 + rng.integers(-3, 4, 40) * 1e-13 * rng.standard_normal(40), 0.3)):
            tau = np.percentile(scores, 100 * (1 - keep))
            got = pathways.threshold({"s": jnp.asarray(scores[None])}, keep=keep)["s"][0]
            np.testing.assert_array_equal(np.asarray(got), scores > tau)
