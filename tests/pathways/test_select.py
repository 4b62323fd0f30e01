"""Selection: one global NumPy-style percentile per example, strict `>`, dead units dropped."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import pathways as pw
from tests.pathways import _models


def _reference_masks(scores: dict, keep: float):
    """float64 NumPy transcription of the authors' `_mask_least_important_neurons`, per example."""
    names = list(scores)
    batch = scores[names[0]].shape[0]
    out = {n: np.zeros(scores[n].shape, bool) for n in names}
    taus = []
    for b in range(batch):
        flat = np.concatenate([np.asarray(scores[n][b], np.float64).ravel() for n in names])
        tau = np.percentile(flat, 100 * (1 - keep))
        taus.append(tau)
        for n in names:
            out[n][b] = np.asarray(scores[n][b], np.float64) > tau
    return out, np.array(taus)


@pytest.mark.parametrize("keep", [0.01, 0.05, 0.1, 0.2, 0.25, 0.3, 0.5, 0.75, 0.999])
@pytest.mark.parametrize("seed", [0, 1])
def test_threshold_matches_numpy_percentile(keep, seed):
    rng = np.random.default_rng(seed)
    scores = {
        "a": rng.exponential(size=(3, 7, 5, 4)).astype(np.float32),
        "b": rng.exponential(size=(3, 33)).astype(np.float32),
    }
    scores["a"][scores["a"] < 0.3] = 0.0  # dead units
    scores["b"][:, :3] = scores["b"][:, 3:4]  # ties
    ref, taus = _reference_masks(scores, keep)
    got = pw.threshold({k: jnp.asarray(v) for k, v in scores.items()}, keep=keep)
    for n in scores:
        near = np.abs(scores[n].astype(np.float64) - taus.reshape((-1,) + (1,) * (scores[n].ndim - 1)))
        near = near <= 1e-6 * np.maximum(taus.reshape(near.shape[:1] + (1,) * (near.ndim - 1)), 1e-30)
        assert np.array_equal(np.asarray(got[n])[~near], ref[n][~near]), n
        assert got[n].shape == scores[n].shape and got[n].dtype == jnp.bool_


def test_dead_units_dropped_and_kept_fraction_can_exceed_nonzero_share():
    rng = np.random.default_rng(3)
    s = rng.uniform(0.1, 1.0, size=(2, 1000)).astype(np.float32)
    s[:, :900] = 0.0  # 90% zero scores: tau = 0 at keep=0.5
    m = pw.threshold({"s": jnp.asarray(s)}, keep=0.5)
    np.testing.assert_array_equal(np.asarray(m["s"]), s > 0)
    np.testing.assert_allclose(np.asarray(pw.kept_fraction(m)), 0.1)


def test_ties_at_tau_are_dropped_and_keep_one_keeps_all():
    s = jnp.asarray([[0.0, 1.0, 2.0, 2.0, 2.0, 3.0]])
    # 50th percentile of [0,1,2,2,2,3] is 2.0 -> only the 3.0 survives (ties dropped).
    assert pw.threshold({"s": s}, keep=0.5)["s"].tolist() == [[False, False, False, False, False, True]]
    assert bool(pw.threshold({"s": s}, keep=1.0)["s"].all())


def test_sparser_pathway_is_a_subset():
    rng = np.random.default_rng(4)
    s = {"a": jnp.asarray(rng.exponential(size=(4, 300)).astype(np.float32))}
    wide, narrow = pw.threshold(s, keep=0.2), pw.threshold(s, keep=0.05)
    assert bool((narrow["a"] <= wide["a"]).all())
    np.testing.assert_allclose(np.asarray(pw.kept_fraction(wide)), 0.2, atol=1 / 300)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "resnet"])
def test_select_on_networks(kind):
    f, fwd, x = _models.model(kind, seed=0)
    names = jp.core.relu_sites(f, x)
    t = jnp.argmax(f(x), axis=-1)
    scores = pw.contributions(f, x, t)
    assert tuple(scores) == names or set(scores) == set(names)
    # Taylor scores against a hand-written reference: a * d y_t / d a with explicit masks.
    ones = [jnp.ones(s.shape) for s in fwd(x)[1]]
    grads = jax.grad(lambda m: jnp.take_along_axis(fwd(x, m)[0], t[:, None], 1).sum())(ones)
    acts = [jax.nn.relu(z) for z in fwd(x)[1]]
    for n, a, g in zip(names, acts, grads):
        # d y / d m = a * d y / d a
        np.testing.assert_allclose(np.asarray(scores[n]), np.abs(np.asarray(g)), rtol=1e-5, atol=1e-6)
        assert bool(((scores[n] > 0) <= (a > 0)).all())
    masks = pw.select(f, x, t, keep=0.2)
    ref, taus = _reference_masks({n: np.asarray(scores[n]) for n in names}, 0.2)
    total = sum(np.asarray(m).size for m in masks.values())
    mismatch = sum(int((np.asarray(masks[n]) != ref[n]).sum()) for n in names)
    assert mismatch <= max(1, total // 1000)
    for n, a in zip(names, acts):
        assert masks[n].shape == a.shape
        assert bool((masks[n] <= (a > 0)).all()), "a kept unit was not strictly active"
    frac = np.asarray(pw.kept_fraction(masks))
    assert np.all(frac <= 0.2 + len(masks) / total * 4) and np.all(frac > 0.0)


def test_select_with_named_sites_and_integrated_method():
    f, _, x = _models.model("mlp", seed=1)
    names = jp.core.relu_sites(f, x)
    one = pw.select(f, x, 0, keep=0.1, sites=names[-1])
    assert tuple(one) == (names[-1],)
    ig = pw.select(f, x, 0, keep=0.1, method="integrated", steps=4)
    assert set(ig) == set(names)


def test_errors():
    f, _, x = _models.model("mlp", seed=0)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="keep"):
            pw.select(f, x, 0, keep=bad)
    for bad in ("0.2", True, None):
        with pytest.raises(TypeError, match="keep"):
            pw.pathway_gradient(f, x, 0, keep=bad)
    with pytest.raises(ValueError, match="target out of range"):
        pw.select(f, x, 5, keep=0.2)
    with pytest.raises(ValueError, match="target out of range"):
        pw.pathway_gradient(f, x, jnp.array([0, 1, -1, 2]), keep=0.2)
    with pytest.raises(ValueError, match="shape"):
        pw.contributions(f, x, jnp.array([0, 1]))
    with pytest.raises(ValueError, match="relu_9.*Did you mean"):
        pw.select(f, x, 0, keep=0.2, sites="relu_9")
    with pytest.raises(ValueError, match="Unknown site 'nothing/\\*'"):
        pw.pathway_gradient(f, x, 0, keep=0.2, sites="nothing/*")
    with pytest.raises(ValueError, match="selects no site"):
        pw.contributions(f, x, 0, sites=lambda name, site: False)
    with pytest.raises(ValueError, match="no post-ReLU"):
        pw.select(lambda x: jnp.tanh(x) @ jnp.ones((20, 3)), x, 0, keep=0.2)
    with pytest.raises(ValueError, match="method"):
        pw.select(f, x, 0, keep=0.2, method="shapley")
    with pytest.raises(ValueError, match="keep"):
        pw.threshold({"a": jnp.ones((1, 3))}, keep=2)


@pytest.mark.parametrize("n", [1, 2, 7, 100, 3137])
def test_percentile_rows_is_numpy_percentile(n):
    from jaxplain.pathways._select import percentile_rows, position

    rng = np.random.default_rng(n)
    v = rng.normal(size=(4, n)).astype(np.float32)
    v[:, : n // 3] = 0.0
    v[1, : n // 4] = -0.0
    for q in (0.0, 10.0, 33.3, 50.0, 70.0, 80.0, 99.9, 100.0):
        ref = np.percentile(v.astype(np.float64), q, axis=1)
        np.testing.assert_allclose(percentile_rows(jnp.asarray(v), position(n, q)), ref,
                                   rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("n", [2, 5, 64, 1001])
def test_percentile_rows_with_ties_is_numpy_percentile(n):
    """Few distinct values: the two order statistics fall inside and at the ends of tie runs."""
    from jaxplain.pathways._select import percentile_rows, position

    v = np.random.default_rng(n).integers(-3, 4, size=(6, n)).astype(np.float32)
    for q in np.linspace(0.0, 100.0, 41):
        ref = np.percentile(v.astype(np.float64), q, axis=1)
        np.testing.assert_allclose(percentile_rows(jnp.asarray(v), position(n, float(q))), ref,
                                   rtol=1e-6, atol=1e-7)


def test_every_dict_comes_back_in_the_networks_order():
    """Scores, masks and gates are keyed in the order the sites run (a compiled function's dict
    comes back sorted: here 'late/relu' before 'zz_early/relu'), as jp.sites lists them."""
    w1, w2 = jnp.ones((3, 4)) / 3, jnp.ones((4, 2)) / 4

    def f(x):
        with jax.named_scope("zz_early"):
            h = jax.nn.relu(x @ w1)
        with jax.named_scope("late"):
            h = jax.nn.relu(h - 0.1)
        return h @ w2

    x = jnp.arange(6.0).reshape(2, 3)
    order = [s.name for s in jp.sites(f, x) if s.kind == "activation"]
    assert order == ["zz_early/relu", "late/relu"]
    results = {
        "contributions": pw.contributions(f, x, 0),
        "integrated": pw.integrated_contributions(f, x, 0, steps=2),
        "select": pw.select(f, x, 0, keep=0.5),
        "threshold": pw.threshold(pw.contributions(f, x, 0), keep=0.5),
        "greedy": pw.greedy_masks(f, x, 0, rounds=2, step=10.0),
        "random": pw.random_masks(jax.random.key(0), f, x, keep=0.5),
        "gates": pw.learned_gates(f, x, steps=2),
    }
    for name, tree in results.items():
        assert list(tree) == order, name
