"""TCAV and dissection corners: repeated or too few random sets (a null without spread made any
concept significant), a CAV shaped for another site, and masks in the wrong layout at a
resolution other than x's (read with a spatial axis as the concepts)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import concepts

D = 6
_RNG = np.random.default_rng(0)


def model(x):
    """hidden = tanh(x); wide = the hidden values and their squares (2 D units)."""
    with jax.named_scope("hidden"):
        h = jnp.tanh(x)
    with jax.named_scope("wide"):
        w = jnp.concatenate([h, h * h], axis=1)
    return jnp.stack([w[:, 0] + w[:, D], -w[:, 1]], axis=1)


def _set(n=24):
    return jnp.asarray(_RNG.normal(size=(n, D)), jnp.float32)


X, CONCEPT = _set(), _set().at[:, 0].add(3.0)
RANDOMS = [_set() for _ in range(3)]


def _tcav(randoms, concept=CONCEPT):
    return concepts.tcav(model, X, 0, site="hidden", concept=concept, randoms=randoms, steps=10)


# tanh saturates: the concept CAV against the 20-example set reaches 0.67 held-out accuracy.
@pytest.mark.filterwarnings("ignore:tcav. the concept CAVs against random sets:RuntimeWarning")
def test_repeated_random_sets_are_refused():
    # Was: randoms=[r] * 6 gave equal null scores, p = 0 and "significant" for any concept.
    r = RANDOMS[0]
    with pytest.raises(ValueError, match=r"randoms\[0\] and randoms\[1\] are the same examples"):
        _tcav([r, r, RANDOMS[1]])
    with pytest.raises(ValueError, match=r"randoms\[1\] and randoms\[2\] are the same"):
        _tcav([r, RANDOMS[1], jnp.array(np.asarray(RANDOMS[1]))])   # an equal copy
    with pytest.raises(ValueError, match=r"concept and randoms\[2\] are the same"):
        _tcav(RANDOMS, concept=RANDOMS[2])
    # Distinct sets (one a subset of another's rows, another of another size) pass.
    ok = _tcav([r, RANDOMS[1], r[:20]])
    assert ok.random_scores.shape == (3,)


def test_two_random_sets_are_refused_and_three_give_distinct_null_pairs():
    # Was: with 2 sets the null CAVs were R0-vs-R1 and R1-vs-R0 on one split, scores s, 1 - s.
    with pytest.raises(ValueError, match=r"at least 3 random example sets, got 2.*negated"):
        _tcav(RANDOMS[:2])
    # With 3 the cyclic null pairs (0, 1), (1, 2), (2, 0) are distinct pairs of sets: each null
    # score is that of cav() on its own pair.
    res = _tcav(RANDOMS)
    want = [concepts.tcav_score(model, X, 0, cav=concepts.cav(
        model, RANDOMS[i], RANDOMS[(i + 1) % 3], site="hidden", steps=10)) for i in range(3)]
    np.testing.assert_allclose(np.asarray(res.random_scores), np.asarray(want))


def test_a_cav_of_another_site_names_the_site_and_the_shapes():
    # Was: a bare dot_general TypeError.
    v = concepts.cav(model, CONCEPT, RANDOMS[0], site="wide", steps=10)
    wrong = dataclasses.replace(v, site="hidden")
    with pytest.raises(ValueError, match=r"cav.vector has shape \(12,\).*site 'hidden' has shape "
                                         r"\(6,\)"):
        concepts.directional_derivatives(model, X, 0, cav=wrong)
    # At its own site: logit_0 = wide_0 + wide_D, so the derivative is v_0 + v_D everywhere.
    np.testing.assert_allclose(concepts.directional_derivatives(model, X, 0, cav=v),
                               np.full(len(X), float(v.vector[0] + v.vector[D])), rtol=1e-5)

def _nhwc_model():
    w = jax.random.normal(jax.random.key(0), (3, 3, 1, 4))

    def f(x):
        h = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        with jax.named_scope("relu"):
            h = jax.nn.relu(h)
        return h.mean(axis=(1, 2))

    return f


IMAGES = jax.random.uniform(jax.random.key(1), (10, 8, 8, 1))
INK = jnp.concatenate([IMAGES > 0.5, IMAGES <= 0.5], axis=-1)                 # (10, 8, 8, 2)
INK16 = jax.image.resize(INK.astype(jnp.float32), (10, 16, 16, 2), "nearest") > 0.5


def test_masks_in_the_wrong_layout_at_another_resolution_are_refused():
    # Was: (10, 2, 16, 16) masks for NHWC x were read as 16 concepts on 2 x 16 maps.
    f = _nhwc_model()
    with pytest.raises(ValueError, match=r"look channels-first .*jnp\.moveaxis\(masks, 1, -1\)"):
        concepts.dissect(f, IMAGES, jnp.moveaxis(INK16, -1, 1), site="relu")
    with pytest.raises(ValueError, match=r"spatial axes \(4, 16\), not of the aspect ratio"):
        concepts.dissect(f, IMAGES, INK16[:, ::4], site="relu")
    # In the right layout, at any resolution of x's aspect ratio (rounded), the same as iou.
    _, acts = jp.capture(f, "relu")(IMAGES)
    for masks in (INK16, INK16[:, :15, :15], INK[:, ::2, ::2]):
        np.testing.assert_allclose(concepts.dissect(f, IMAGES, masks, site="relu", quantile=0.9),
                                   concepts.iou(acts["relu"], masks, quantile=0.9))
