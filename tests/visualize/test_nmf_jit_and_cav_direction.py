"""NMF under jit refuses negative data (NaN, not wrong-signed factors); a CAV-shaped
direction objective is the full dot product with the site's value."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import concepts
from jaxplain import visualize as vis
from tests.visualize._models import digits_images, tiny_cnn

F = tiny_cnn()
X = jnp.asarray(digits_images(8))
KEY = jax.random.key(0)


def test_nmf_under_jit_gives_nan_for_negative_data_and_the_eager_factors_otherwise():
    v = jax.random.normal(jax.random.key(2), (20, 5))
    with pytest.raises(ValueError, match="non-negative"):
        vis.nmf(v, 2, key=KEY)
    out = jax.jit(lambda v: vis.nmf(v, 2, key=KEY, steps=50))(v)  # was w min -2277
    assert np.isnan(np.asarray(out.w)).all() and np.isnan(np.asarray(out.h)).all()
    assert np.isnan(float(out.error))
    eager = vis.nmf(jnp.abs(v), 2, key=KEY, steps=50)
    jitted = jax.jit(lambda v: vis.nmf(v, 2, key=KEY, steps=50))(jnp.abs(v))
    np.testing.assert_allclose(jitted.w, eager.w, rtol=1e-5, atol=1e-6)
    assert float(jitted.w.min()) >= 0 and float(jitted.h.min()) >= 0


_W = jax.random.normal(jax.random.key(0), (3, 6))


def _pre_activation_model(x):
    with jax.named_scope("pre"):
        h = x @ _W  # negative values, mean > 0
    return jax.nn.relu(h) @ jnp.ones((6, 2))


def test_neuron_groups_of_a_pre_activation_site_under_jit_are_nan():
    x = jax.random.normal(jax.random.key(1), (64, 3))
    with pytest.raises(ValueError, match="non-negative"):
        vis.neuron_groups(_pre_activation_model, x, site="pre", groups=2, key=KEY, steps=50)
    g = jax.jit(lambda x: vis.neuron_groups(_pre_activation_model, x, site="pre", groups=2,
                                            key=KEY, steps=50))(x)
    # Were finite "non-negative" groups with entries down to -0.64 (directions), -6.9 (presence).
    assert np.isnan(np.asarray(g.directions)).all() and np.isnan(np.asarray(g.presence)).all()
    ok = jax.jit(lambda x: vis.neuron_groups(F, x, site="relu_1", groups=2, key=KEY,
                                             steps=20))(X)
    assert float(ok.directions.min()) >= 0 and float(ok.presence.min()) >= 0


def test_direction_takes_a_cav_shaped_like_the_site_value():
    v = concepts.cav(F, X[:4], X[4:], site="relu_1")
    assert v.vector.shape == (8, 8, 6)  # was refused: "vector must be 1-D"
    obj = vis.direction(v.site, v.vector)
    _, acts = jp.capture(F, "relu_1")(X)
    value = np.asarray(acts["relu_1"], np.float64)
    want = np.einsum("bhwc,hwc->", value, np.asarray(v.vector, np.float64))
    np.testing.assert_allclose(float(obj(acts, None, X)), want, rtol=1e-5)
    # Rendered (the two stacked into one vmapped call), each raises its projection.
    out = vis.render(F, [obj, vis.direction(v.site, -v.vector)], key=KEY, shape=(1, 8, 8, 1),
                     steps=30)
    assert (np.asarray(out.trace[:, -1]) > np.asarray(out.trace[:, 0])).all()
