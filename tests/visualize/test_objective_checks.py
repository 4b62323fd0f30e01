"""Objectives are checked against the model the same way by render and by site attribution;
class_logit takes one class per example; one site where one is read; PRNG keys."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A
from jaxplain import visualize as vis
from tests.visualize._models import digits_images, tiny_cnn

F = tiny_cnn()  # sites conv1, relu, conv2, relu_1 (6 channels, 8x8), head (10 classes)
X = jnp.asarray(digits_images(3))
T = jnp.array([4, 0, 7])
KEY = jax.random.key(0)
BLOCKS = (vis.site_attribution, vis.channel_attribution, vis.spatial_attribution)


def test_class_logit_of_an_array_is_one_class_per_example():
    # Was the sum of the three listed classes for every example.
    want = A.activation_x_gradient(F, X, T, site="relu_1")
    got = vis.site_attribution(F, X, vis.class_logit(T), site="relu_1")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # The network after relu_1 is linear: each example's channels sum to its own class's logit.
    c = vis.channel_attribution(F, X, vis.class_logit(T), site="relu_1")
    np.testing.assert_allclose(c.sum(1), F(X)[jnp.arange(3), T], rtol=1e-4, atol=1e-5)
    p = vis.site_attribution(F, X, vis.class_probability(list(T)), site="relu_1")
    rows = [vis.site_attribution(F, X[i:i + 1], vis.class_probability(int(T[i])),
                                 site="relu_1")[0] for i in range(3)]
    np.testing.assert_allclose(p, np.stack(rows), rtol=1e-5, atol=1e-7)


def test_render_reads_a_class_array_as_one_class_per_image():
    t = jnp.array([3, 5])
    out = vis.render(F, vis.class_logit(t), key=KEY, shape=(2, 8, 8, 1), steps=2)
    np.testing.assert_allclose(out.value, F(out.images)[jnp.arange(2), t].sum(), rtol=1e-5)
    with pytest.raises(ValueError, match=r"one class per example, an int array of shape \(1,\)"):
        vis.render(F, vis.class_logit(t), key=KEY, shape=(1, 8, 8, 1), steps=2)


def test_a_class_index_of_another_shape_or_dtype_is_an_error():
    with pytest.raises(ValueError, match=r"shape \(3,\) for this batch of 3.*got shape \(2,\)"
                                         r".*class_logit\(0\) \+ class_logit\(2\)"):
        vis.site_attribution(F, X, vis.class_logit(jnp.array([0, 2])), site="relu_1")
    with pytest.raises(ValueError, match="model has 10 classes"):
        vis.site_attribution(F, X, vis.class_logit(jnp.array([0, 2, 10])), site="relu_1")
    for bad in (1.5, jnp.zeros((3, 2), int), "3", None):
        with pytest.raises(TypeError, match="index must be one class"):
            vis.class_logit(bad)
    with pytest.raises(TypeError, match="class_probability: index must be one class"):
        vis.class_probability(jnp.array([0.0, 1.0]))


@pytest.mark.parametrize("method", BLOCKS)
@pytest.mark.parametrize("objective, message", [
    (vis.channel("relu_1", 9), r"channel index out of range for site 'relu_1' with 6 "),
    (vis.neuron("relu_1", 9), r"channel index out of range for site 'relu_1' with 6 "),
    (vis.neuron("relu_1", 0, (9, 9)), r"neuron position out of range .* \(8, 8\)"),
    (vis.neuron("relu_1", 0, (3,)), r"'relu_1' must have 2 coordinate"),
    (vis.direction("relu_1", jnp.ones(5)), r"'relu_1' must have 6 entries .* got shape \(5,\)"),
    (vis.direction("relu_1", jnp.ones((8, 8, 5))), r"must have 6 entries .*\(8, 8, 6\)"),
    (vis.cosine_direction("relu_1", jnp.ones(4)), r"'relu_1' must have 6 entries"),
])
def test_site_attribution_checks_indices_as_render_does(method, objective, message):
    # JAX clamped them: channel 9 of 6 was channel 5, position (9, 9) was (7, 7).
    with pytest.raises(ValueError, match=message):
        method(F, X, objective, site="relu")
    with pytest.raises(ValueError, match=message):
        vis.render(F, objective, key=KEY, shape=(1, 8, 8, 1), steps=1)


def test_in_range_indices_still_attribute():
    for obj in (vis.channel("relu_1", 5), vis.neuron("relu_1", 5, (7, 7)),
                vis.direction("relu_1", jnp.ones(6)), vis.direction("relu_1", jnp.ones((8, 8, 6)))):
        assert float(jnp.abs(vis.site_attribution(F, X, obj, site="relu")).max()) > 0


@pytest.mark.parametrize("call", [
    lambda s: vis.neuron_groups(F, X, site=s, groups=2, key=KEY, steps=2),
    lambda s: vis.semantic_dictionary(F, X, site=s),
    *(lambda s, m=m: m(F, X, vis.class_logit(0), site=s) for m in BLOCKS),
])
def test_one_site_where_one_is_read(call):
    # Were KeyError: 'relu*', "unhashable type: 'list'" or an fnmatch TypeError.
    with pytest.raises(ValueError, match=r"site 'relu\*' matches 2 sites \(relu, relu_1\)"):
        call("relu*")
    with pytest.raises(TypeError, match=r"site must be a site name \(str\), got list"):
        call(["relu_1"])
    np.testing.assert_array_equal(jax.tree.leaves(call("relu_?"))[-1],
                                  jax.tree.leaves(call("relu_1"))[-1])  # one match: that site


@pytest.mark.parametrize("call", [
    lambda k: vis.render(F, vis.channel("relu", 0), key=k, shape=(1, 8, 8, 1), steps=1),
    lambda k: vis.nmf(jnp.ones((4, 3)), 2, key=k, steps=2),
    lambda k: vis.neuron_groups(F, X, site="relu", groups=2, key=k, steps=2),
])
def test_a_key_that_is_not_a_prng_key_is_named(call):
    # Were JAX's "invalid PRNG key data" / "unexpected PRNG key type": attribution's wording.
    with pytest.raises(TypeError, match="key must be a (JAX )?PRNG key.*; got int"):
        call(0)
    with pytest.raises(ValueError, match=r"key is required .*jax.random.key\(0\)"):
        call(None)
