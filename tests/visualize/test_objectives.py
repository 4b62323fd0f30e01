"""Objectives: values against NumPy formulas, arithmetic, stacking, errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import visualize as vis

RNG = np.random.default_rng(0)
ACTS = {"a": jnp.asarray(RNG.normal(size=(3, 4, 5, 6)), jnp.float32),
        "b": jnp.asarray(RNG.normal(size=(3, 7)), jnp.float32)}
LOGITS = jnp.asarray(RNG.normal(size=(3, 10)), jnp.float32)
X = jnp.zeros((3, 4, 5, 1))


def _np(name):
    return np.asarray(ACTS[name], np.float64)


def test_single_objectives_match_numpy():
    a, b, y = _np("a"), _np("b"), np.asarray(LOGITS, np.float64)
    cases = [
        (vis.channel("a", 2), a[..., 2].mean(axis=(1, 2)).sum()),
        (vis.channel("b", 4), b[:, 4].sum()),
        (vis.neuron("a", 5, (1, 3)), a[:, 1, 3, 5].sum()),
        (vis.layer("a"), (a**2).reshape(3, -1).mean(axis=1).sum()),
        (vis.direction("a", np.arange(6.0)), (a.mean(axis=(1, 2)) @ np.arange(6.0)).sum()),
        (vis.class_logit(7), y[:, 7].sum()),
    ]
    p = np.exp(y - y.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    cases.append((vis.class_probability(7), p[:, 7].sum()))
    for obj, want in cases:
        np.testing.assert_allclose(float(obj(ACTS, LOGITS, X)), want, rtol=1e-5, atol=1e-5)


def test_diversity_is_minus_mean_pairwise_gram_cosine():
    a = _np("a").reshape(3, -1, 6)
    grams = np.einsum("bpc,bpd->bcd", a, a).reshape(3, -1)
    unit = grams / np.linalg.norm(grams, axis=1, keepdims=True)
    sim = unit @ unit.T
    want = -(sim.sum() - np.trace(sim)) / 6
    np.testing.assert_allclose(float(vis.diversity("a")(ACTS, LOGITS, X)), want, rtol=1e-5)


def test_arithmetic_composes_like_numbers():
    c, l, k = vis.channel("a", 1), vis.layer("b"), vis.class_logit(2)
    v = lambda o: float(o(ACTS, LOGITS, X))
    combo = c + 0.5 * l - 2 * k
    np.testing.assert_allclose(v(combo), v(c) + 0.5 * v(l) - 2 * v(k), rtol=1e-5)
    np.testing.assert_allclose(v(-c), -v(c), rtol=1e-6)
    np.testing.assert_allclose(v(sum([c, l, k])), v(c) + v(l) + v(k), rtol=1e-5)
    assert len((c + l + k).terms) == 3  # flattened
    assert set(combo.sites()) == {"a", "b"}


def test_objectives_are_pytrees_that_stack_and_jit():
    objs = [vis.channel("a", i) + 0.1 * i * vis.layer("a") for i in range(6)]
    stacked = vis.stack(objs)
    vals = jax.vmap(lambda o: o(ACTS, LOGITS, X))(stacked)
    want = [float(o(ACTS, LOGITS, X)) for o in objs]
    np.testing.assert_allclose(vals, want, rtol=1e-5)
    jitted = jax.jit(lambda o: o(ACTS, LOGITS, X))(objs[3])
    np.testing.assert_allclose(jitted, want[3], rtol=1e-5)


def test_errors():
    with pytest.raises(TypeError, match="site"):
        vis.channel(3, 1)
    with pytest.raises(ValueError, match="scalar"):
        vis.direction("a", 1.0)
    with pytest.raises(ValueError, match=r"shaped like one example's value there, \(4, 5, 6\)"):
        vis.direction("a", np.ones((5, 4, 6)))(ACTS, LOGITS, X)
    with pytest.raises(ValueError, match="share one structure"):
        vis.stack([vis.channel("a", 1), vis.channel("b", 1)])
    with pytest.raises(TypeError, match="Objective"):
        vis.stack([])


class _Redness(vis.Objective):
    """No fields: no decorator needed."""

    def sites(self):
        return ()

    def __call__(self, acts, logits, x):
        return jnp.sum(x[..., 0])


@dataclasses.dataclass(frozen=True, eq=False)
class _Weighted(vis.Objective):
    """An array leaf and a static str field."""

    weights: jax.Array
    site: str

    def sites(self):
        return (self.site,)

    def __call__(self, acts, logits, x):
        return jnp.sum(jnp.mean(acts[self.site], axis=(1, 2)) @ self.weights)


def test_user_objectives_are_pytrees_without_registration():
    # Subclasses used to fail in render's jit ("Error interpreting argument ... as an abstract
    # array") unless registered by hand.
    assert jax.tree_util.tree_leaves(_Redness()) == []
    w = _Weighted(jnp.arange(6.0), "a")
    leaves, tree = jax.tree_util.tree_flatten(w)
    assert len(leaves) == 1 and "'a'" in str(tree)  # the site is static
    np.testing.assert_allclose(float(jax.jit(lambda o: o(ACTS, LOGITS, X))(w)),
                               float(vis.direction("a", jnp.arange(6.0))(ACTS, LOGITS, X)),
                               rtol=1e-5)
    stacked = vis.stack([_Weighted(jnp.eye(6)[i], "a") for i in range(6)])
    vals = jax.vmap(lambda o: o(ACTS, LOGITS, X))(stacked)
    np.testing.assert_allclose(vals, _np("a").mean(axis=(1, 2)).sum(0), rtol=1e-5)
    f = lambda x: jnp.mean(x, axis=(1, 2))
    out = vis.render(f, 2.0 * _Redness() - vis.class_logit(1), key=jax.random.key(0),
                     shape=(1, 4, 4, 3), steps=30)
    img = np.asarray(out.images[0])
    assert img[..., 0].mean() > 0.7 and img[..., 1].mean() < 0.3


def test_a_user_objective_with_plain_attributes_says_to_make_it_a_dataclass():
    class Plain(_Redness):
        def __init__(self):
            self.weight = 2.0

    with pytest.raises(TypeError, match=r"Plain .* not a dataclass.*@dataclasses.dataclass"):
        jax.tree_util.tree_leaves(Plain())


def test_neuron_positions_must_be_integers():
    with pytest.raises(ValueError, match=r"must be integers.*\(3.7, 4.9\)"):
        vis.neuron("a", 1, (3.7, 4.9))
    np.testing.assert_array_equal(vis.neuron("a", 1, (3.0, 4.0)).position, [3, 4])
    np.testing.assert_array_equal(vis.neuron("a", 1, np.array([1, 2])).position, [1, 2])
