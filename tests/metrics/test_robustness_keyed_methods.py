"""Robustness metrics of a keyed random method (SmoothGrad draws its noise by row position) and
of a model tied to x's batch: each noisy copy of example i is explained at row i of an
x-shaped batch, so the scores do not depend on `batch_size` and the method's own noise is the
same for every copy as for x (the metric measures the map's change, not Monte Carlo noise)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A
from jaxplain import metrics

W1 = jax.random.normal(jax.random.key(0), (6, 8))
W2 = jax.random.normal(jax.random.key(1), (8, 3))
X = jax.random.normal(jax.random.key(2), (4, 6))
T = jnp.array([0, 1, 2, 0])
META = jax.random.normal(jax.random.key(3), (4, 2))
W_META = jax.random.normal(jax.random.key(4), (8, 3))


def mlp(x):
    return jnp.tanh(x @ W1) @ W2


def closure(x):
    """A second input closed over: f only takes batches of META's 4 rows."""
    return jnp.tanh(jnp.concatenate([x, META], axis=1) @ jnp.ones((8, 8)) * 0.1) @ W_META


SMOOTHGRAD = functools.partial(A.smoothgrad, key=jax.random.key(5), samples=4)
METRICS = {
    "max_sensitivity": metrics.max_sensitivity,
    "continuity": metrics.continuity,
    "local_lipschitz": metrics.local_lipschitz,
}


@pytest.mark.parametrize("name", METRICS)
def test_a_keyed_method_scores_the_same_at_every_batch_size(name):
    key = jax.random.key(6)
    runs = [METRICS[name](mlp, X, T, SMOOTHGRAD, key=key, samples=3, batch_size=b)
            for b in (None, 1, 2)]
    for got in runs[1:]:
        np.testing.assert_allclose(got, runs[0], rtol=1e-5)


def _by_hand(f, method, key, radius, samples):
    """The documented max-sensitivity: example i's draws ``U[-radius, radius]`` from
    ``fold_in(key, i)``; every copy explained by the same method (same key) as x."""
    eps = jnp.stack([jax.random.uniform(jax.random.fold_in(key, i), (samples,) + X.shape[1:],
                                        minval=-radius, maxval=radius)
                     for i in range(len(X))], axis=1)                  # (samples, n, 6)
    a0 = np.asarray(method(f, X, T), np.float64)
    ratios = [np.linalg.norm(np.asarray(method(f, X + e, T), np.float64) - a0, axis=1)
              / np.linalg.norm(a0, axis=1) for e in eps]
    return np.max(ratios, axis=0)


@pytest.mark.parametrize("method", [SMOOTHGRAD, A.gradient], ids=["smoothgrad", "gradient"])
@pytest.mark.parametrize("batch_size", [None, 2])
def test_max_sensitivity_is_the_hand_computation_with_the_method_noise_fixed(method,
                                                                            batch_size):
    key = jax.random.key(7)
    got = metrics.max_sensitivity(mlp, X, T, method, key=key, radius=0.05, samples=3,
                                  batch_size=batch_size)
    np.testing.assert_allclose(got, _by_hand(mlp, method, key, 0.05, 3), rtol=1e-4)


@pytest.mark.parametrize("batch_size", [None, 2])
def test_a_model_tied_to_x_batch_is_scored(batch_size):
    key = jax.random.key(8)
    got = metrics.max_sensitivity(closure, X, T, A.gradient, key=key, radius=0.05, samples=3,
                                  batch_size=batch_size)
    np.testing.assert_allclose(got, _by_hand(closure, A.gradient, key, 0.05, 3), rtol=1e-4)
    cont = metrics.continuity(closure, X, T, A.gradient, key=key, samples=3,
                              batch_size=batch_size)
    np.testing.assert_allclose(cont, metrics.continuity(closure, X, T, A.gradient, key=key,
                                                        samples=3, batch_size=1), rtol=1e-5)


def test_a_method_jax_cannot_trace_runs_one_copy_at_a_time():
    def in_numpy(f, x, t):
        return np.asarray(x) ** 2 * np.asarray(f(x))[:, :1]

    key = jax.random.key(9)
    with pytest.raises(TypeError, match="Pass batch_size=1"):
        metrics.max_sensitivity(mlp, X, T, in_numpy, key=key, samples=3)
    got = metrics.max_sensitivity(mlp, X, T, in_numpy, key=key, radius=0.05, samples=3,
                                  batch_size=1)
    np.testing.assert_allclose(got, _by_hand(mlp, in_numpy, key, 0.05, 3), rtol=1e-4)
