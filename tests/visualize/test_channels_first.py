"""Channels-first models in jaxplain.visualize: render takes `shape` and returns images in the
model's own layout and optimises NHWC images through the model's NHWC view, so an NCHW network
(plain or Equinox) renders what its NHWC twin renders, moved; the building blocks, the neuron
groups and the demo's layer grid agree across the twins too."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import visualize as vis
from jaxplain.visualize import _render
from jaxplain.visualize._demo import render_layers
from tests.core.test_channels import XF, EqxNet, X, nchw, nhwc

EQX = jp.as_function(EqxNet())  # the NHWC twin written as an Equinox module (NCHW images)
KEY = jax.random.key(2)
OBJECTIVES = [vis.channel("relu_1", i) for i in range(4)]
OPTIONS = dict(key=KEY, steps=30, learning_rate=0.1, transforms=(vis.Jitter(1), vis.Rotate()),
               regularizers=(vis.TotalVariation(0.01),))
TWINS = {"pixel-plain": (vis.Pixel(std=0.5), nchw),
         "fourier-colour-equinox": (vis.Fourier(std=0.5, colour=vis.colour_decorrelation(X)), EQX)}


def _to_nchw(images):
    return np.moveaxis(np.asarray(images), -1, -3)


def _channel_means(f, images, site="relu_1"):
    _, acts = jp.capture(f, site)(images)
    return np.asarray(jnp.mean(acts[site], axis=(1, 2)))


@pytest.mark.parametrize("param, f", TWINS.values(), ids=TWINS.keys())
def test_the_nchw_twin_renders_the_nhwc_images_transposed(param, f):
    want = vis.render(nhwc, OBJECTIVES, shape=(2, 8, 8, 2), param=param, **OPTIONS)
    got = vis.render(f, OBJECTIVES, shape=(2, 2, 8, 8), param=param, **OPTIONS)
    assert want.images.shape == (4, 2, 8, 8, 2)
    assert got.images.shape == (4, 2, 2, 8, 8)              # the model's own layout
    np.testing.assert_allclose(got.images, _to_nchw(want.images), atol=1e-5)
    np.testing.assert_allclose(got.trace, want.trace, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.value, want.value, rtol=1e-5, atol=1e-5)
    # The images run through the model as they are, with the reported value.
    for i in range(4):
        np.testing.assert_allclose(_channel_means(f, got.images[i])[:, i].sum(), got.value[i],
                                   rtol=1e-4, atol=1e-5)


def test_an_equinox_cnn_renders_and_its_channel_rises():
    start = _channel_means(EQX, jnp.full((1, 2, 8, 8), 0.5))
    c = int(np.argmax(start[0]))
    out = vis.render(EQX, vis.channel("relu_1", c), key=KEY, shape=(1, 2, 8, 8), steps=60,
                     learning_rate=0.1, param=vis.Pixel(std=0.5))
    assert out.images.shape == (1, 2, 8, 8)
    rendered = _channel_means(EQX, out.images)[0, c]
    np.testing.assert_allclose(rendered, out.value, rtol=1e-4)
    assert out.trace[0] > 0 and out.value > 2 * out.trace[0]
    assert rendered > 2 * start[0, c]


def test_a_second_call_on_a_channels_first_model_does_not_recompile():
    kw = dict(shape=(1, 2, 8, 8), steps=12, transforms=(vis.Jitter(1),))
    vis.render(EQX, [vis.channel("relu_1", i) for i in (0, 1)], key=KEY, **kw)
    size = _render._render._cache_size()
    out = vis.render(EQX, [vis.channel("relu_1", i) for i in (2, 3)], key=jax.random.key(5),
                     **kw)
    assert _render._render._cache_size() == size
    assert np.all(np.isfinite(out.images))
    vis.render(EQX, vis.channel("relu_1", 0), key=KEY, **dict(kw, steps=13))
    assert _render._render._cache_size() > size  # the counter does see a new program


def test_shape_is_given_in_the_models_layout():
    for f in (nchw, EQX):
        with pytest.raises(Exception) as info:
            vis.render(f, vis.channel("relu_1", 0), key=KEY, shape=(1, 8, 8, 2), steps=2)
        assert any("(k, c, h, w) for a channels-first model" in n
                   for n in getattr(info.value, "__notes__", ()))


def test_priors_and_generators_work_on_nhwc_images():
    kw = dict(key=KEY, steps=20, learning_rate=0.1)
    prior = vis.gaussian_prior(X, weight=0.05)               # fitted on NHWC images
    want = vis.render(nhwc, vis.class_logit(1), shape=(1, 8, 8, 2), regularizers=(prior,), **kw)
    got = vis.render(nchw, vis.class_logit(1), shape=(1, 2, 8, 8), regularizers=(prior,), **kw)
    np.testing.assert_allclose(got.images, _to_nchw(want.images), atol=1e-5)
    with pytest.raises(ValueError, match="fit it on NHWC data"):
        vis.render(nchw, vis.class_logit(1), shape=(1, 2, 8, 8),
                   regularizers=(vis.gaussian_prior(XF),), **kw)

    def stripes(z, layout):  # images[y, x, :] = sigmoid(z[x]), NHWC or NCHW
        img = jnp.broadcast_to(jax.nn.sigmoid(z)[:, None, :, None], (z.shape[0], 8, 8, 2))
        return img if layout == "NHWC" else jnp.moveaxis(img, -1, 1)

    nhwc_gen = vis.CodeSpace(lambda z: stripes(z, "NHWC"), (8,))
    want = vis.render(nhwc, vis.class_logit(1), shape=(1, 8, 8, 2), param=nhwc_gen, **kw)
    got = vis.render(EQX, vis.class_logit(1), shape=(1, 2, 8, 8), param=nhwc_gen, **kw)
    np.testing.assert_allclose(got.images, _to_nchw(want.images), atol=1e-5)
    with pytest.raises(ValueError, match="NHWC images"):
        vis.render(EQX, vis.class_logit(1), shape=(1, 2, 8, 8),
                   param=vis.CodeSpace(lambda z: stripes(z, "NCHW"), (8,)), **kw)


def test_building_blocks_of_the_nchw_twins_match():
    objective = vis.class_logit(2)
    want_dict = vis.semantic_dictionary(nhwc, X[:2], site="relu_1", k=2)
    want_groups = vis.neuron_groups(nhwc, X, site="relu", groups=2, key=KEY, steps=100)
    for f in (nchw, EQX):
        got = vis.semantic_dictionary(f, XF[:2], site="relu_1", k=2)
        np.testing.assert_array_equal(got.channels, want_dict.channels)
        np.testing.assert_allclose(got.values, want_dict.values, rtol=1e-5, atol=1e-6)
        for method in (vis.site_attribution, vis.channel_attribution, vis.spatial_attribution):
            np.testing.assert_allclose(method(f, XF, objective, site="relu"),
                                       method(nhwc, X, objective, site="relu"),
                                       rtol=1e-4, atol=1e-5, err_msg=method.__name__)
        groups = vis.neuron_groups(f, XF, site="relu", groups=2, key=KEY, steps=100)
        np.testing.assert_allclose(groups.directions, want_groups.directions, rtol=1e-4,
                                   atol=1e-5)
        np.testing.assert_allclose(groups.presence, want_groups.presence, rtol=1e-4, atol=1e-5)


def test_the_demo_layer_grid_of_the_nchw_twin_is_the_nhwc_one():
    kw = dict(key=KEY, steps=8, layers=("relu", "relu_1"), groups=2, nmf_steps=50)
    want, want_groups, want_images = render_layers(nhwc, X, **kw)
    got, groups, images = render_layers(EQX, XF, **kw)
    np.testing.assert_allclose(images, want_images, atol=1e-5)   # NHWC, ready to draw
    np.testing.assert_allclose(groups.directions, want_groups.directions, rtol=1e-4, atol=1e-5)
    for a, b in zip(got, want):
        assert a.images.shape == b.images.shape and a.images.shape[-1] == 2
        np.testing.assert_allclose(a.images, b.images, atol=1e-5)
        np.testing.assert_allclose(a.value, b.value, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(a.data_best, b.data_best, rtol=1e-5, atol=1e-6)
