"""VarGrad stays a variance when gradients are large and barely vary, and smoothgrad names a
string `method` for what it is."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A

RNG = np.random.default_rng(0)
W = (RNG.normal(size=(10, 3)) * 300).astype(np.float32)
X = RNG.normal(size=(2, 10)).astype(np.float32)
KEY = jax.random.key(0)
SAMPLES, STDEV = 50, 0.15


def _f(v):  # gradients ~300 with a tiny true variance (~1e-5) from the sine
    return v @ jnp.asarray(W) + 0.01 * jnp.sin(v).sum(-1, keepdims=True)


def _reference():
    """Float64 two-pass variance of the exact gradients at the same noisy inputs."""
    span = X.max(1, keepdims=True) - X.min(1, keepdims=True)
    grads = []
    for k in jax.random.split(KEY, SAMPLES):
        noisy = X + STDEV * span * np.asarray(jax.random.normal(k, X.shape, jnp.float32))
        grads.append(W[:, 0].astype(np.float64) + 0.01 * np.cos(noisy.astype(np.float64)))
    return np.var(np.stack(grads), axis=0)


@pytest.mark.parametrize("batch_size", [None, 7])
def test_vargrad_is_non_negative_and_matches_a_float64_reference(batch_size):
    out = np.asarray(A.smoothgrad(_f, X, 0, key=KEY, samples=SAMPLES, stdev=STDEV,
                                  kind="vargrad", batch_size=batch_size))
    ref = _reference()
    assert (out >= 0).all()
    np.testing.assert_allclose(out, ref, rtol=0.05, atol=1e-7)


def test_a_method_named_by_a_string_is_refused_with_the_function_to_pass():
    expected = r"not its name.*jaxplain\.attribution\.integrated_gradients"
    with pytest.raises(TypeError, match=expected):
        A.smoothgrad(_f, X, 0, key=KEY, method="integrated_gradients")
    with pytest.raises(TypeError, match="method must be an attribution function"):
        A.smoothgrad(_f, X, 0, key=KEY, method=3)
