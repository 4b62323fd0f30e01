"""Pruning-derived pathways (DGR gates, greedy, random), overlap statistics, and NeuronIntGrad."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import pathways as pw
from tests.pathways import _models


@pytest.mark.parametrize("batch_size", [None, 1, 3, 7])
def test_integrated_contributions_match_a_hand_reference(batch_size):
    f, fwd, x = _models.model("mlp", seed=5)
    names = jp.core.relu_sites(f, x)
    t = jnp.argmax(f(x), -1)
    steps = 6
    got = pw.integrated_contributions(f, x, t, steps=steps, batch_size=batch_size)
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


def test_integrated_steps_chunked_or_not_give_the_same_scores_masks_and_gradients():
    # batch_size = IG steps per pass (None: all at once); it must not change any result
    f, _, x = _models.model("cnn", seed=1)
    want = pw.integrated_contributions(f, x, 0, steps=8, batch_size=None)
    for bs in (1, 3, 4, 9, 50):
        got = pw.integrated_contributions(f, x, 0, steps=8, batch_size=bs)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)
    pg = pw.pathway_gradient(f, x, 0, keep=0.3, method="integrated", steps=8, batch_size=None)
    masks = pw.select(f, x, 0, keep=0.3, method="integrated", steps=8, batch_size=None)
    for bs in (1, 3):
        np.testing.assert_allclose(
            pw.pathway_gradient(f, x, 0, keep=0.3, method="integrated", steps=8, batch_size=bs),
            pg, rtol=1e-5, atol=1e-7)
        got = pw.select(f, x, 0, keep=0.3, method="integrated", steps=8, batch_size=bs)
        assert pw.jaccard(got, masks).min() > 0.99
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            pw.integrated_contributions(f, x, 0, steps=8, batch_size=bad)
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            pw.select(f, x, 0, keep=0.3, method="integrated", batch_size=bad)


def _temp_bytes(fn, x):
    analysis = jax.jit(fn).lower(x).compile().memory_analysis()
    if analysis is None or getattr(analysis, "temp_size_in_bytes", None) is None:
        pytest.skip(f"no compiled memory analysis on {jax.default_backend()}")
    return analysis.temp_size_in_bytes


@pytest.mark.parametrize("batch_size", [1, 4])
def test_integrated_memory_does_not_grow_with_steps(batch_size):
    # the steps are summed in a scan: the compiled program holds one chunk of gradients, not all
    # steps + 1 of them (lax.map + sum: 0.12 MB at steps=8 -> 0.90 MB at 64 on this CNN)
    f, _, x = _models.model("cnn", seed=1)
    calls = {
        "integrated_contributions": lambda steps: lambda x: pw.integrated_contributions(
            f, x, 0, steps=steps, batch_size=batch_size),
        "pathway_gradient": lambda steps: lambda x: pw.pathway_gradient(
            f, x, 0, keep=0.2, method="integrated", steps=steps, batch_size=batch_size),
        "select": lambda steps: lambda x: pw.select(
            f, x, 0, keep=0.2, method="integrated", steps=steps, batch_size=batch_size),
    }
    for name, call in calls.items():
        small, large = _temp_bytes(call(8), x), _temp_bytes(call(64), x)
        assert large <= 1.2 * small + 4096, (name, small, large)


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


def _dgr_reference(fwd, x, gates, steps, lr, momentum, l1):
    """One example at a time: the authors' cdrp/main.py loop (SGD + momentum by hand, clamp)."""
    best_all = []
    for b in range(len(x)):
        xb = x[b : b + 1]
        p = jax.nn.softmax(fwd(xb)[0], -1)
        label = int(jnp.argmax(p))

        def loss(g):
            q = jax.nn.softmax(fwd(xb, g)[0], -1)
            return (-(p * jnp.log(q + 1e-20)).sum() + l1 * sum(jnp.abs(k).sum() for k in g)), q

        g = [k[b : b + 1] for k in gates]
        buf = [jnp.zeros_like(k) for k in g]
        best, best_loss = g, np.inf
        for _ in range(steps):
            (value, q), grad = jax.value_and_grad(loss, has_aux=True)(g)
            if int(jnp.argmax(q)) == label and float(value) < best_loss:
                best, best_loss = g, float(value)
            buf = [momentum * u + d for u, d in zip(buf, grad)]  # torch.optim.SGD, dampening 0
            g = [jnp.clip(k - lr * u, 0.0, 100.0) for k, u in zip(g, buf)]
        best_all.append(best)
    return [jnp.concatenate([bb[k] for bb in best_all]) for k in range(len(gates))]


def test_learned_gates_match_the_authors_loop():
    f, fwd, x = _models.model("mlp", seed=8)
    names = jp.core.relu_sites(f, x)
    steps, l1 = 40, 0.05
    got = pw.learned_gates(f, x, steps=steps, l1=l1)
    ones = [jnp.ones(z.shape) for z in fwd(x)[1]]
    ref = _dgr_reference(fwd, x, ones, steps, 0.01, 0.9, l1)
    for name, r in zip(names, ref):
        np.testing.assert_allclose(got[name], r, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(ref[0] - 1.0).max()) > 0.1  # the gates moved, so the match means something


def _needs_big_gate(x):
    """Logits (0.9 g0 + 0.5, 2 g1) with gates g on relu(x) = (1, 1): class 1, kept only if the
    gate of unit 1 stays large; with both gates near 0 the prediction is class 0."""
    return jax.nn.relu(x) @ jnp.array([[0.9, 0.0], [0.0, 2.0]]) + jnp.array([0.5, 0.0])


def test_learned_gates_retry_with_smaller_l1():
    x = jnp.ones((1, 2))
    site = jp.core.relu_sites(_needs_big_gate, x)[0]
    gated = lambda g: jnp.argmax(  # noqa: E731
        jp.intervene(_needs_big_gate, {site: lambda v: v * g[site]})(x), -1)
    # A key whose Uniform[0, 1) initial gates change the prediction (so iteration 0 does not count).
    key = next(k for k in (jax.random.key(i) for i in range(50))
               if int(gated({site: jax.random.uniform(jax.random.split(k, 1)[0], (1, 2))})[0]) != 1)
    opts = dict(init="uniform", key=key, steps=200, l1=100.0)
    # With l1 = 100 the gates collapse to 0 and no iteration keeps class 1: the initial gates return.
    stuck = pw.learned_gates(_needs_big_gate, x, retries=0, **opts)
    assert int(gated(stuck)[0]) != 1
    # Dividing l1 by 10 per retry finds gates that keep the prediction.
    found = pw.learned_gates(_needs_big_gate, x, retries=5, **opts)
    assert int(gated(found)[0]) == 1
    # init="ones" starts from the original network, which keeps the prediction: no retry.
    ones = [pw.learned_gates(_needs_big_gate, x, steps=50, l1=100.0, retries=r)[site] for r in (0, 5)]
    np.testing.assert_array_equal(ones[0], ones[1])
    with pytest.raises(ValueError, match="retries"):
        pw.learned_gates(_needs_big_gate, x, retries=-1)


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


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a CPU rewrite")
def test_loops_keep_convolution_gradients_in_the_fast_layout():
    # inside a loop XLA:CPU leaves a gradient's convolution with its kernel's in/out axes swapped
    # ("..._01oi->..."), several times slower; the DGR, greedy and integrated loops rewrite it
    f, _, x = _models.model("cnn", seed=1)
    calls = {
        "learned_gates": lambda x: pw.learned_gates(f, x, steps=3),
        "greedy_masks": lambda x: pw.greedy_masks(f, x, 0, rounds=3),
        "integrated_contributions": lambda x: pw.integrated_contributions(f, x, 0, steps=3,
                                                                          batch_size=2),
    }
    for name, call in calls.items():
        labels = set(re.findall(r"dim_labels=([^,\s]+)", jax.jit(call).lower(x).compile().as_text()))
        assert labels == {"b01f_01io->b01f"}, (name, labels)
