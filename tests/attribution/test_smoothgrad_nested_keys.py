"""SmoothGrad around a keyed random method (GradientSHAP draws its noise by row position): each
noisy copy of example i is explained at row i of an x-shaped batch, as x itself would be, so
the result does not depend on `batch_size` and is the documented mean over the noisy copies.
The methods whose copies are still folded into one batch explain each row on its own."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A
from jaxplain import lrp as L
from jaxplain.attribution._smoothgrad import _ROW_WISE

W1 = jax.random.normal(jax.random.key(0), (6, 8))
W2 = jax.random.normal(jax.random.key(1), (8, 3))
X = jax.random.normal(jax.random.key(2), (3, 6))
T = jnp.array([0, 1, 2])
KEY, SAMPLES, STDEV = jax.random.key(3), 4, 0.15
INNER = functools.partial(A.gradient_shap, key=jax.random.key(4), samples=3,
                          baselines=jax.random.normal(jax.random.key(5), (2, 6)))


def mlp(x):
    return jax.nn.relu(x @ W1 + 0.5) @ W2


def test_a_keyed_inner_method_gives_the_same_map_at_every_batch_size():
    runs = [A.smoothgrad(mlp, X, T, key=KEY, samples=SAMPLES, method=INNER, batch_size=b)
            for b in (None, 1, 2)]
    for got in runs[1:]:
        np.testing.assert_allclose(got, runs[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_size", [None, 3])
def test_a_keyed_inner_method_is_averaged_over_the_documented_copies(batch_size):
    span = X.max(axis=1, keepdims=True) - X.min(axis=1, keepdims=True)
    maps = [np.asarray(INNER(mlp, X + STDEV * span * jax.random.normal(k, X.shape), T))
            for k in jax.random.split(KEY, SAMPLES)]                 # the same key each copy
    got = A.smoothgrad(mlp, X, T, key=KEY, samples=SAMPLES, stdev=STDEV, method=INNER,
                       batch_size=batch_size)
    np.testing.assert_allclose(got, np.mean(maps, axis=0), rtol=1e-5, atol=1e-6)


ROW_WISE = {
    A.gradient: {}, A.gradient_x_input: {}, A.integrated_gradients: {"steps": 4},
    A.guided_backprop: {}, A.deconvnet: {}, A.deeplift: {}, A.lrp: {"rules": L.Epsilon()},
    A.occlusion: {"window": 2}, A.feature_ablation: {},
}


@pytest.mark.parametrize("method", _ROW_WISE, ids=lambda m: m.__name__)
def test_the_methods_folded_into_one_batch_explain_each_row_on_its_own(method):
    """What folding the copies needs: a row's map is the same in a batch of other rows."""
    assert set(ROW_WISE) == set(_ROW_WISE)
    other = jax.random.normal(jax.random.key(6), X.shape)
    both = method(mlp, jnp.concatenate([X, other]), jnp.concatenate([T, T[::-1]]),
                  **ROW_WISE[method])
    np.testing.assert_allclose(both[:3], method(mlp, X, T, **ROW_WISE[method]),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both[3:], method(mlp, other, T[::-1], **ROW_WISE[method]),
                               rtol=1e-5, atol=1e-6)
