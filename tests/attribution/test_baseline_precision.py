"""A number or list given as a baseline is taken in x's dtype: in float64 mode, baseline=0.3 is
0.3, not its float32 rounding (eager calls differed from jitted ones by 1e-8, and DeepLIFT's
sum missed f(x) - f(0.3) by 1.2e-7)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A

METHODS = {
    "integrated_gradients": lambda f, x, b: A.integrated_gradients(f, x, 0, baseline=b),
    "deeplift": lambda f, x, b: A.deeplift(f, x, 0, baseline=b),
    "occlusion": lambda f, x, b: A.occlusion(f, x, 0, window=(1,), baseline=b),
    "feature_ablation": lambda f, x, b: A.feature_ablation(f, x, 0, baseline=b),
}


def _model():
    w = jax.random.normal(jax.random.key(0), (5, 4), jnp.float64)
    return lambda x: jnp.tanh(x @ w) @ jnp.arange(1.0, 9.0, dtype=jnp.float64).reshape(4, 2)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_number_baseline_is_the_full_baseline_in_float64(name):
    with jax.enable_x64(True):
        f, x = _model(), jax.random.normal(jax.random.key(1), (3, 5), jnp.float64)
        method = METHODS[name]
        full = method(f, x, jnp.full_like(x, 0.3))
        for given in (0.3, [0.3] * 5):
            np.testing.assert_array_equal(method(f, x, given), full)


def test_deeplift_sums_to_the_gap_to_the_number_baseline_and_completeness_takes_a_list():
    with jax.enable_x64(True):
        f, x = _model(), jax.random.normal(jax.random.key(1), (3, 5), jnp.float64)
        a = A.deeplift(f, x, 0, baseline=0.3)
        gap = f(x)[:, 0] - f(jnp.full_like(x, 0.3))[:, 0]
        np.testing.assert_allclose(a.sum(1), gap, rtol=0, atol=1e-13)
        delta = A.completeness_delta(f, x, 0, np.asarray(a).tolist(), baseline=0.3)
        assert float(jnp.abs(delta).max()) < 1e-13
