"""NMF (planted low rank), neuron groups, semantic dictionaries and site attribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import visualize as vis
from tests.visualize._models import digits_images, tiny_cnn

F = tiny_cnn()
X = jnp.asarray(digits_images(6))
KEY = jax.random.key(0)


def test_nmf_recovers_planted_low_rank_non_negative_data():
    rng = np.random.default_rng(0)
    w = rng.uniform(size=(200, 3)) ** 2
    h = rng.uniform(size=(3, 12)) ** 2
    v = w @ h
    out = vis.nmf(jnp.asarray(v, jnp.float32), 3, key=KEY, steps=1000)
    assert out.w.shape == (200, 3) and out.h.shape == (3, 12)
    assert float(out.w.min()) >= 0 and float(out.h.min()) >= 0
    rec = np.asarray(out.w, np.float64) @ np.asarray(out.h, np.float64)
    err = np.linalg.norm(v - rec) / np.linalg.norm(v)
    np.testing.assert_allclose(float(out.error), err, rtol=1e-3, atol=1e-5)
    assert err < 0.02
    # A lower rank cannot fit as well: the error really measures the fit.
    assert float(vis.nmf(jnp.asarray(v, jnp.float32), 1, key=KEY, steps=300).error) > 5 * err


def test_nmf_errors():
    with pytest.raises(ValueError, match="non-negative"):
        vis.nmf(-jnp.ones((4, 3)), 2, key=KEY)
    with pytest.raises(ValueError, match="rank"):
        vis.nmf(jnp.ones((4, 3)), 4, key=KEY)
    with pytest.raises(ValueError, match="2-D"):
        vis.nmf(jnp.ones((4, 3, 2)), 2, key=KEY)
    with pytest.raises(ValueError, match="NaN"):
        vis.nmf(jnp.full((4, 3), jnp.nan), 2, key=KEY)


def test_neuron_groups_reconstruct_the_site():
    g = vis.neuron_groups(F, X, site="relu_1", groups=3, key=KEY, steps=300)
    _, acts = jp.capture(F, "relu_1")(X)
    a = np.asarray(acts["relu_1"], np.float64)
    assert g.directions.shape == (3, 6) and g.presence.shape == (6, 8, 8, 3)
    np.testing.assert_allclose(np.linalg.norm(g.directions, axis=1), 1.0, rtol=1e-5)
    assert float(g.directions.min()) >= 0 and float(g.presence.min()) >= 0
    rec = np.einsum("bhwk,kc->bhwc", np.asarray(g.presence), np.asarray(g.directions))
    err = np.linalg.norm(a - rec) / np.linalg.norm(a)
    np.testing.assert_allclose(float(g.error), err, rtol=1e-3, atol=1e-5)
    assert err < 0.3


def test_semantic_dictionary_is_the_top_k_per_position():
    d = vis.semantic_dictionary(F, X[:2], site="relu_1", k=2)
    _, acts = jp.capture(F, "relu_1")(X[:2])
    a = np.asarray(acts["relu_1"])
    order = np.argsort(-a, axis=-1)[..., :2]
    np.testing.assert_allclose(np.asarray(d.values), np.take_along_axis(a, order, -1), rtol=1e-6)
    with pytest.raises(ValueError, match="k must be"):
        vis.semantic_dictionary(F, X[:2], site="relu_1", k=7)


def test_site_attribution_is_complete_when_the_rest_is_linear():
    # After relu_1 the model is a global mean and a bias-free matrix: logit = sum(act * grad).
    logits = F(X)
    a = vis.channel_attribution(F, X, vis.class_logit(4), site="relu_1")
    np.testing.assert_allclose(a.sum(axis=1), logits[:, 4], rtol=1e-4, atol=1e-5)
    s = vis.spatial_attribution(F, X, vis.class_logit(4), site="relu_1")
    np.testing.assert_allclose(s.sum(axis=(1, 2)), logits[:, 4], rtol=1e-4, atol=1e-5)


def test_attribution_between_two_hidden_sites_matches_a_finite_difference():
    # Channel attribution of relu -> channel 3 of conv2 (linear in relu): exact too.
    obj = vis.channel("conv2", 3)
    a = vis.site_attribution(F, X[:2], obj, site="relu")
    _, acts = jp.capture(F, "conv2")(X[:2])
    want = acts["conv2"][..., 3].mean(axis=(1, 2))
    np.testing.assert_allclose(a.sum(axis=(1, 2, 3)), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="Objective"):
        vis.site_attribution(F, X, "conv2", site="relu")


def test_site_attribution_to_a_class_the_model_does_not_have_is_an_error():
    for obj in (vis.class_logit(10), vis.channel("conv2", 1) - vis.class_probability(11)):
        with pytest.raises(ValueError, match="model has 10 classes"):
            vis.site_attribution(F, X[:2], obj, site="relu")


def test_an_objective_upstream_of_the_site_is_an_error():
    # relu comes before relu_1: the objective cannot depend on relu_1 (its attribution was
    # silently all zeros).
    with pytest.raises(ValueError, match=r"reads site\(s\) \['relu'\], computed before "
                                         r"site='relu_1'.*one of \['conv1'\]"):
        vis.channel_attribution(F, X[:2], vis.channel("relu", 0), site="relu_1")
    with pytest.raises(ValueError, match="Unknown objective site 'relu_9'"):
        vis.site_attribution(F, X[:2], vis.channel("relu_9", 0), site="relu")
    # The same site, and later ones, are fine.
    same = vis.channel_attribution(F, X[:2], vis.channel("relu_1", 2), site="relu_1")
    assert float(jnp.abs(same).max()) > 0
