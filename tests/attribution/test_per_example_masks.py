"""One feature mask per example: each example is explained on its own groups, so its row in a
batch is what it gets alone with its own mask (sampled draws included), and the checks count the
groups of the example with the most, not the ids of the whole mask."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A

_r = np.random.default_rng(0)
W1 = jnp.asarray(_r.normal(0, 0.8, (8, 12)), jnp.float32)
W2 = jnp.asarray(_r.normal(0, 0.8, (12, 3)), jnp.float32)
X = jnp.asarray(_r.normal(0, 1, (3, 8)), jnp.float32)
T = jnp.array([0, 1, 2])
KEY = jax.random.key(11)
# 3, 8 and 2 groups; ids numbered over the whole mask (13 in all)
MASKS = np.array([[0, 0, 1, 1, 2, 2, 2, 0],
                  [3, 4, 5, 6, 7, 8, 9, 10],
                  [11, 11, 11, 11, 12, 12, 12, 12]])


def f(x):
    """A non-additive model: (n, 8) -> (n, 3)."""
    return jnp.tanh(x @ W1) @ W2


def exact_shapley(x, target, mask):
    """Shapley values of one example's groups by enumeration (baseline 0), spread on x."""
    ids = np.unique(mask)
    value = lambda on: float(f(jnp.where(np.isin(mask, ids[list(on)]), x, 0.0)[None])[0, target])
    phi, c = np.zeros(len(ids)), len(ids)
    for g in range(c):
        rest = [h for h in range(c) if h != g]
        for size in range(c):
            for s in itertools.combinations(rest, size):
                w = math.factorial(size) * math.factorial(c - size - 1) / math.factorial(c)
                phi[g] += w * (value(s + (g,)) - value(s))
    return phi[np.searchsorted(ids, mask)]


def _alone(method, i, **kw):
    return np.asarray(method(f, X[i:i + 1], T[i:i + 1], feature_mask=MASKS[i:i + 1], **kw))[0]


@pytest.mark.parametrize("method,kw", [
    (A.shapley_sampling, {"key": KEY, "samples": 4}),
    (A.kernel_shap, {"key": KEY, "samples": 10}),  # the 8-group example sampled, the rest exact
])
def test_a_row_is_what_the_example_gets_alone(method, kw):
    batch = np.asarray(method(f, X, T, feature_mask=MASKS, **kw))
    for i in range(len(X)):
        np.testing.assert_allclose(batch[i], _alone(method, i, **kw), rtol=1e-5, atol=1e-5)


def test_shapley_sampling_converges_per_example_to_the_exact_values():
    """Each example's orderings are uniform over its own groups (errors of about 0.03 here)."""
    phi = np.asarray(A.shapley_sampling(f, X, T, key=KEY, samples=1000, feature_mask=MASKS))
    for i in range(len(X)):
        want = exact_shapley(np.asarray(X[i]), int(T[i]), MASKS[i])
        np.testing.assert_allclose(phi[i], want, atol=0.1 * np.abs(want).max())
        # efficiency holds in every ordering: f(x)_t - f(0)_t over each example's own groups
        gap = float(f(X[i:i + 1])[0, T[i]] - f(jnp.zeros((1, 8)))[0, T[i]])
        np.testing.assert_allclose(phi[i][np.unique(MASKS[i], return_index=True)[1]].sum(), gap,
                                   rtol=1e-5, atol=1e-5)


def test_shapley_sampling_evaluates_the_most_groups_of_any_example():
    """samples * (8 - 1) + 2 evaluations of the batch, not samples * (13 - 1) + 2."""
    rows = []

    def counted(z):
        jax.debug.callback(lambda n: rows.append(int(n)), z.shape[0])
        return f(z)

    A.shapley_sampling(counted, X, T, key=KEY, samples=5, feature_mask=MASKS).block_until_ready()
    assert sum(rows) == len(X) * (5 * (8 - 1) + 2)


def test_kernel_shap_enumerates_each_example_exactly():
    """13 ids in all but at most 8 groups in an example: exact, for every example."""
    phi = np.asarray(A.kernel_shap(f, X, T, feature_mask=MASKS))
    for i in range(len(X)):
        np.testing.assert_allclose(phi[i], exact_shapley(np.asarray(X[i]), int(T[i]), MASKS[i]),
                                   rtol=1e-4, atol=1e-5)


def test_kernel_shap_takes_as_few_samples_as_the_example_with_the_most_groups():
    masks = np.array([[0, 0, 1, 1, 2, 2, 2, 2], [3, 4, 5, 6, 7, 8, 8, 8]])  # 3 and 6 groups
    x, t = X[:2], T[:2]
    batch = np.asarray(A.kernel_shap(f, x, t, key=KEY, samples=8, feature_mask=masks))
    for i in range(2):
        alone = A.kernel_shap(f, x[i:i + 1], t[i:i + 1], key=KEY, samples=8,
                              feature_mask=masks[i:i + 1])
        np.testing.assert_allclose(batch[i], np.asarray(alone)[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"samples=5 fits 6 feature groups \(the most of any"):
        A.kernel_shap(f, x, t, key=KEY, samples=5, feature_mask=masks)


def test_exact_kernel_shap_counts_the_groups_of_the_example_with_the_most():
    x = jnp.ones((2, 16))
    masks = np.stack([np.arange(16) // 2, np.arange(16)])  # 8 and 16 groups
    with pytest.raises(ValueError, match=r"at most 14 feature groups; got 16 \(the most of any"):
        A.kernel_shap(lambda z: z @ jnp.ones((16, 1)), x, 0, feature_mask=masks)
