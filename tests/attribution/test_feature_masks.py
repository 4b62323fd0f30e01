"""Feature masks per example (variable-length inputs): each example's groups, ids numbered over
the whole mask, an id an example lacks gets nothing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A

W = jnp.array([[1.0], [2.0], [-1.0], [0.5], [3.0]])


def f(x):
    """A linear part and an interaction of the first two features."""
    return jnp.concatenate([x @ W, x[:, :1] * x[:, 1:2] + x @ W], axis=1)


X = jnp.array([[1.0, 2.0, 3.0, 4.0, 0.5], [2.0, 1.0, 0.5, 1.0, -1.0], [0.3, -2.0, 1.0, 0.0, 2.0]])
MASK = np.array([[0, 0, 1, 2, 2], [0, 1, 1, 1, 3], [5, 5, 5, 5, 5]])


def _one_member_each(a, mask):
    """The value of each group in each example, one member read per group: (n, groups)."""
    out = np.zeros((len(mask), mask.max() + 1))
    for i, row in enumerate(mask):
        for g in np.unique(row):
            out[i, g] = np.asarray(a)[i][row == g][0]
    return out


@pytest.mark.parametrize("method,kw,target", [
    (A.feature_ablation, {}, 1),
    (A.kernel_shap, {}, 1),                                              # exact
    (A.kernel_shap, {"key": jax.random.key(2), "samples": 24}, 1),       # sampled per example
    (A.lime, {"key": jax.random.key(3), "samples": 32}, 1),
    (A.shapley_sampling, {"key": jax.random.key(0), "samples": 16}, 0),  # additive: exact
])
def test_a_mask_per_example_gives_each_example_its_own_groups(method, kw, target):
    got = method(f, X, target, feature_mask=MASK, **kw)
    for i in range(len(X)):
        alone = method(f, X[i:i + 1], target, feature_mask=MASK[i], **kw)
        np.testing.assert_allclose(got[i:i + 1], alone, rtol=1e-5, atol=1e-5)
    for i in range(len(X)):  # members of a group share its value
        for g in np.unique(MASK[i]):
            members = np.asarray(got[i])[MASK[i] == g]
            assert np.allclose(members, members[0])


@pytest.mark.parametrize("method,kw", [
    (A.kernel_shap, {}),
    (A.kernel_shap, {"key": jax.random.key(1), "samples": 12}),
    (A.shapley_sampling, {"key": jax.random.key(1), "samples": 8}),
])
def test_efficiency_holds_per_example_over_its_own_groups(method, kw):
    phi = _one_member_each(method(f, X, 1, feature_mask=MASK, **kw), MASK)
    np.testing.assert_allclose(phi.sum(1), f(X)[:, 1] - f(jnp.zeros_like(X))[:, 1], rtol=1e-5,
                               atol=1e-5)


def test_a_mask_with_a_batch_axis_of_one_is_shared():
    shared = A.feature_ablation(f, X, 0, feature_mask=MASK[0])
    np.testing.assert_allclose(A.feature_ablation(f, X, 0, feature_mask=MASK[:1]), shared)


def test_lime_reads_each_examples_groups():
    a = A.lime(f, X, 0, key=jax.random.key(0), feature_mask=MASK, samples=256, ridge=0.0)
    # f's class 0 is linear: a group's coefficient is the sum of its members' w_j x_j
    want = [[float((np.asarray(W[:, 0]) * np.asarray(X[i]))[MASK[i] == MASK[i][j]].sum())
             for j in range(5)] for i in range(len(X))]
    np.testing.assert_allclose(a, want, rtol=1e-4, atol=1e-4)


def test_a_mask_of_another_shape_is_named():
    with pytest.raises(ValueError, match=r"one mask per example \(batch axis n or 1\)"):
        A.feature_ablation(f, X, 0, feature_mask=MASK[:2])


@pytest.mark.parametrize("method,kw", [
    (A.kernel_shap, {}),
    (A.kernel_shap, {"key": jax.random.key(0), "samples": 12}),
    (A.lime, {"key": jax.random.key(0), "samples": 12}),
    (A.feature_ablation, {}),
])
def test_a_concrete_mask_with_a_batch_axis_works_under_jit(method, kw):
    mask = MASK[:1]  # batch axis 1: shared, given with x's number of axes
    eager = method(f, X, 1, feature_mask=mask, **kw)
    np.testing.assert_allclose(jax.jit(lambda x: method(f, x, 1, feature_mask=mask, **kw))(X), eager,
                               rtol=1e-6, atol=1e-6)
