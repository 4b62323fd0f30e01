"""Pruning-derived pathways (DGR gates, greedy, random), overlap statistics, and NeuronIntGrad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import pathways as pw
from tests.pathways import _models


def test_integrated_contributions_match_a_hand_reference():
    f, fwd, x = _models.model("mlp", seed=5)
    names = jp.core.relu_sites(f, x)
    t = jnp.argmax(f(x), -1)
    steps = 6
    got = pw.integrated_contributions(f, x, t, steps=steps)
    ones = [jnp.ones(z.shape) for z in fwd(x)[1]]
    for l, name in enumerate(names):
        total = 0.0
        for j in range(steps + 1):  # alpha_j = j / T, from 0 to 1 (not the authors' cumulative grid)
            # Hand net: a_l <- m_l * a_l with m_l = alpha_j; d y / d m_l = a_l * dy/da'|_{a' = alpha_j a_l}.
            scale = [o * (j / steps) if k == l else o for k, o in enumerate(ones)]
            total = total + jax.grad(lambda m: jnp.take_along_axis(fwd(x, m)[0], t[:, None], 1).sum())(scale)[l]
        np.testing.assert_allclose(got[name], np.abs(total / (steps + 1)), rtol=1e-4, atol=1e-6)
    # Last site feeds a linear head: dy/da is constant in alpha, so IG == Taylor exactly.
    np.testing.assert_allclose(got[names[-1]], pw.contributions(f, x, t)[names[-1]], rtol=1e-5, atol=1e-7)


def test_random_masks_drop_exact_counts():
    f, fwd, x = _models.model("cnn", seed=0)
    m = pw.random_masks(jax.random.key(0), f, x, keep=0.3)
    for v in m.values():
        n = int(np.prod(v.shape[1:]))
        np.testing.assert_array_equal(v.reshape(len(x), -1).sum(1), n - int(0.7 * n))
    a = next(iter(m.values()))
    assert not bool((a[0] == a[1]).all())


def test_greedy_matches_the_authors_loop():
    f, fwd, x = _models.model("mlp", seed=6)
    t = jnp.argmax(f(x), -1)
    rounds = 6
    got = pw.greedy_masks(f, x, t, rounds=rounds, step=10.0)
    names = jp.core.relu_sites(f, x)
    masks = [np.ones(z.shape, bool) for z in fwd(x)[1]]
    for i in range(rounds):  # NumPy transcription of `_mask_least_important_neurons_iterative`
        m = [jnp.asarray(k, jnp.float32) for k in masks]
        grads = jax.grad(lambda m: jnp.take_along_axis(fwd(x, m)[0], t[:, None], 1).sum())(m)
        scores = [np.abs(np.asarray(g * mk, np.float64)) for g, mk in zip(grads, m)]  # |(m a) dy/d(m a)|
        for b in range(len(x)):
            flat = np.concatenate([s[b].ravel() for s in scores])
            flat[flat <= 0] = flat.max()
            tau = np.percentile(flat, i * 10.0)
            for k, s in enumerate(scores):
                masks[k][b] = ~((s[b] > 0) & (s[b] <= tau))
    total = sum(m.size for m in masks)
    mismatch = sum(int((np.asarray(got[n]) != masks[k]).sum()) for k, n in enumerate(names))
    assert mismatch <= max(2, total // 500)


def test_learned_gates_keep_the_prediction_and_shrink():
    f, fwd, x = _models.model("mlp", seed=7)
    gates = pw.learned_gates(f, x, steps=150, l1=0.05)
    pred = jnp.argmax(f(x), -1)
    assert all(float(g.min()) >= 0.0 and float(g.max()) <= 100.0 for g in gates.values())
    gated = jp.intervene(f, {n: (lambda v, g=g: v * g) for n, g in gates.items()})(x)
    np.testing.assert_array_equal(jnp.argmax(gated, -1), pred)
    mean_gate = float(jnp.mean(jnp.concatenate([g.ravel() for g in gates.values()])))
    assert mean_gate < 0.9  # the L1 term pulled gates below their init of 1
    masks = pw.threshold(gates, keep=0.2)
    assert float(pw.kept_fraction(masks).max()) <= 0.21
    with pytest.raises(ValueError, match="key"):
        pw.learned_gates(f, x, init="uniform")


def test_overlap_statistics_by_hand():
    a = {"s": jnp.array([[1, 1, 0, 0], [1, 0, 0, 0]], bool), "t": jnp.array([[1, 0], [0, 0]], bool)}
    b = {"s": jnp.array([[1, 0, 1, 0], [0, 0, 0, 0]], bool), "t": jnp.array([[1, 1], [0, 0]], bool)}
    np.testing.assert_allclose(pw.jaccard(a, b), [2 / 5, 0.0])
    acts = {"s": jnp.array([[0.0, 1.0, 0.0, 2.0], [1.0, 0.0, 0.0, 0.0]]), "t": jnp.array([[0.0, 3.0], [1.0, 1.0]])}
    np.testing.assert_allclose(pw.dead_share(a, acts), [2 / 3, 0.0])
    np.testing.assert_allclose(pw.kept_fraction(a), [3 / 6, 1 / 6])
    with pytest.raises(ValueError, match="same sites"):
        pw.jaccard(a, {"s": b["s"]})
