"""Methods that run f on a batch of another size than x's (DeepLIFT's inputs and references
stacked, IG's steps folded into the batch) check that f gives one row per example there."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution
from jaxplain.attribution import _common

W1 = jax.random.normal(jax.random.key(0), (4, 8))
W2 = jax.random.normal(jax.random.key(1), (8, 3))
X = jax.random.normal(jax.random.key(2), (1, 5, 4))


def one_graph(h):  # (nodes, features) -> (classes,); no affine stem (IG folds every step)
    return jax.nn.relu(jnp.tanh(h) @ W1).sum(0) @ W2


def first_only(x):  # a batch of one passes f's checks; any batch gives one row
    return one_graph(x[0])[None]


vmapped = jax.vmap(one_graph)


def test_check_batch_of_refuses_one_row_for_a_larger_batch():
    with pytest.raises(ValueError, match="must map a batch of 2 examples to 2 rows"):
        _common.check_batch_of(first_only, X, 2, "a test batch")
    assert not _common.takes_batch(first_only, X, 2) and _common.takes_batch(vmapped, X, 2)


def test_deeplift_refuses_a_model_of_example_zero():
    with pytest.raises(ValueError, match="jax.vmap"):  # was a shape error inside the rule
        attribution.deeplift(first_only, X, 1)


def test_integrated_gradients_refuses_or_is_right():
    with pytest.raises(ValueError, match="rows of outputs"):  # was a silently wrong sum
        attribution.integrated_gradients(first_only, X, 1, steps=8, batch_size=8)
    got = attribution.integrated_gradients(first_only, X, 1, steps=8, batch_size=1)
    np.testing.assert_allclose(got, attribution.integrated_gradients(vmapped, X, 1, steps=8),
                               rtol=1e-5, atol=1e-6)


def test_smoothgrad_falls_back_to_x_batch():
    key = jax.random.key(3)
    got = attribution.smoothgrad(first_only, X, 1, key=key, samples=4)
    want = attribution.smoothgrad(vmapped, X, 1, key=key, samples=4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
