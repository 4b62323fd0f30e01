"""render's inputs: the model's dtype, neuron positions, flat inputs, L1, dead units, the colour
matrix's layout, and which hyper-parameters reuse the compiled loop."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import visualize as vis
from jaxplain.visualize import _render
from tests.visualize._models import tiny_cnn

KEY = jax.random.key(0)
SHAPE = (1, 8, 8, 1)


def _conv_net(dtype):
    """conv(3x3, 1->4) -> relu -> global mean, with weights in ``dtype``."""
    w = (0.6 * jax.random.normal(jax.random.key(0), (3, 3, 1, 4))).astype(dtype)

    def f(x):
        h = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.relu(h).mean(axis=(1, 2))

    return f


def _alive(f, dtype):
    """The channels of ``relu`` that are not dead at the grey start."""
    _, acts = jp.capture(f, "relu")(jnp.full(SHAPE, 0.5, dtype))
    return [c for c in range(4) if float(acts["relu"][..., c].mean()) > 0]


def test_float64_model_renders_with_dtype_and_the_error_names_dtype():
    with jax.enable_x64(True):
        f = _conv_net(jnp.float64)
        with pytest.raises(ValueError, match=r"float32 batch .* runs on float64 .*dtype=jnp\."
                                             r"float64"):
            vis.render(f, vis.channel("relu", 0), key=KEY, shape=SHAPE, steps=4)
        c = _alive(f, jnp.float64)[0]
        out = vis.render(f, vis.channel("relu", c), key=KEY, shape=SHAPE, steps=20,
                         dtype=jnp.float64)
        assert out.images.dtype == out.params.dtype == out.value.dtype == jnp.float64
        _, acts = jp.capture(f, "relu")(out.images)  # the images run as they are
        np.testing.assert_allclose(acts["relu"][..., c].mean(), out.value, rtol=1e-12)
        assert out.value > out.trace[0] > 0


def test_bfloat16_model_renders_with_dtype_in_float32_parameters():
    f = _conv_net(jnp.bfloat16)
    with pytest.raises(ValueError, match=r"runs on bfloat16 .*dtype=jnp\.bfloat16"):
        vis.render(f, vis.channel("relu", 0), key=KEY, shape=SHAPE, steps=4)
    alive = _alive(f, jnp.bfloat16)
    out = vis.render(f, [vis.channel("relu", c) for c in alive], key=KEY, shape=SHAPE,
                     steps=30, dtype=jnp.bfloat16, param=vis.Fourier(), learning_rate=0.1)
    assert out.images.dtype == jnp.bfloat16
    assert out.params.dtype == out.trace.dtype == out.value.dtype == jnp.float32
    assert np.all(np.asarray(out.value) > 1.2 * np.asarray(out.trace[:, 0]))


def test_dtype_errors():
    f = _conv_net(jnp.float32)
    with pytest.raises(ValueError, match="64-bit JAX"):  # x64 is off here
        vis.render(f, vis.channel("relu", 0), key=KEY, shape=SHAPE, steps=4, dtype=jnp.float64)
    with pytest.raises(TypeError, match="floating dtype"):
        vis.render(f, vis.channel("relu", 0), key=KEY, shape=SHAPE, steps=4, dtype=jnp.int32)
    # A shape error is still a shape error (f runs on no dtype at that shape).
    with pytest.raises(ValueError, match=r"shape=\(1, 8, 8, 3\).*pass shape="):
        vis.render(f, vis.channel("relu", 0), key=KEY, shape=(1, 8, 8, 3), steps=4)


def test_neuron_position_must_have_one_coordinate_per_spatial_axis():
    f = tiny_cnn()
    with pytest.raises(ValueError, match=r"'relu' must have 2 coordinate.*\(2, 3, 7\)"):
        vis.render(f, vis.neuron("relu", 1, (2, 3, 7)), key=KEY, shape=SHAPE, steps=4)
    with pytest.raises(ValueError, match=r"'relu' must have 2 coordinate.*got position 2"):
        vis.render(f, vis.neuron("relu", 1, 2), key=KEY, shape=SHAPE, steps=4)
    with pytest.raises(ValueError, match=r"'head' must have 0 coordinate.*position=\(\)"):
        vis.render(f, vis.neuron("head", 2, (0,)), key=KEY, shape=SHAPE, steps=4)
    with pytest.raises(ValueError, match=r"'relu' must have 2 coordinate.*shape \(2, 1\)"):
        vis.render(f, [vis.neuron("relu", 1, (2,)), vis.neuron("relu", 1, (3,))], key=KEY,
                   shape=SHAPE, steps=4)
    # A dense site's neuron takes position=() and is its channel.
    one = vis.render(f, vis.neuron("head", 2, ()), key=KEY, shape=SHAPE, steps=8)
    same = vis.render(f, vis.channel("head", 2), key=KEY, shape=SHAPE, steps=8)
    np.testing.assert_allclose(one.images, same.images)


FLAT = dict(key=KEY, shape=(1, 64), steps=4)
W = jax.random.normal(jax.random.key(1), (64, 10))


@pytest.mark.parametrize("name, kw", [
    ("Fourier", dict(param=vis.Fourier())),
    ("TotalVariation", dict(regularizers=(vis.TotalVariation(0.1),))),
    ("Blur", dict(regularizers=(vis.Blur(0.1),))),
    ("transforms", dict(transforms=(vis.Jitter(1),))),
])
def test_image_only_parts_refuse_flat_inputs_clearly(name, kw):
    f = lambda x: jax.nn.relu(x @ W)
    with pytest.raises(ValueError, match=rf"{name}: NHWC images \(k, h, w, c\) needed, got "
                                         r"shape \(1, 64\); for flat .*Pixel\(\)"):
        vis.render(f, vis.class_logit(3), **FLAT, **kw)


def test_image_only_parts_refuse_flat_inputs_when_called_directly():
    flat = jnp.zeros((2, 64))
    for name, call in [("TotalVariation", vis.TotalVariation()), ("Blur", vis.Blur()),
                       ("blur", vis.blur)]:
        with pytest.raises(ValueError, match=f"{name}: NHWC images"):
            call(flat)
    for t in (vis.Jitter(1), vis.Scale(), vis.Rotate()):
        with pytest.raises(ValueError, match=f"{type(t).__name__}: NHWC images"):
            t(KEY, flat)
    with pytest.raises(ValueError, match="Fourier: NHWC images"):
        vis.Fourier().init(KEY, (2, 64))


def test_flat_inputs_render_with_pixels_l1_and_l2():
    f = lambda x: jax.nn.relu(x @ W)
    out = vis.render(f, vis.class_logit(3), key=KEY, shape=(1, 64), steps=30,
                     regularizers=(vis.L1(0.01), vis.L2(0.01)))
    assert out.images.shape == (1, 64) and out.value > out.trace[0]


def test_l1_closed_form_and_conventions():
    x = jnp.array([[[[0.0], [1.0]], [[0.75], [0.5]]],
                   [[[0.25], [0.25]], [[0.25], [0.25]]]])           # (2, 2, 2, 1)
    # 0.5 * (|0 - .25| + |1 - .25| + |.75 - .25| + |.5 - .25|) = 0.5 * 1.75; image 1 at center.
    np.testing.assert_allclose(vis.L1(0.5, center=0.25)(x), [0.875, 0.0], rtol=1e-6)
    np.testing.assert_allclose(vis.L1()(x), [1.0 + 0.25 + 0.0, 4 * 0.25], rtol=1e-6)
    assert jax.tree_util.tree_leaves(vis.L1(0.3)) == [0.3]  # weight is a leaf, center static
    # Its gradient is weight * sign(x - center): pixels move towards the centre at one speed.
    g = jax.grad(lambda v: vis.L1(2.0)(v).sum())(x)
    np.testing.assert_allclose(g[0, :, :, 0].reshape(-1)[:3], [-2.0, 2.0, 2.0])  # 4th: at 0.5
    np.testing.assert_allclose(g[1], -2.0)


def _dead_unit_model():
    # Unit 1 fires only when the first 8 inputs sum above 5: never near the grey start (4.0).
    w = jnp.zeros((16, 2)).at[:8, 0].set(1.0).at[:8, 1].set(1.0)
    b = jnp.array([0.0, -5.0])
    return lambda x: jax.nn.relu(x @ w + b) @ jnp.ones((2, 3))


def test_dead_unit_warns_eagerly():
    f = _dead_unit_model()
    with pytest.warns(RuntimeWarning, match=r"the objective \(channel\('relu'\)\) stayed "
                                            r"exactly 0 .*pre-activation site"):
        out = vis.render(f, vis.channel("relu", 1), key=KEY, shape=(1, 16), steps=16)
    assert float(out.value) == 0.0
    with pytest.warns(RuntimeWarning, match=r"objectives \[1\] of 2"):
        vis.render(f, [vis.channel("relu", 0), vis.channel("relu", 1)], key=KEY,
                   shape=(1, 16), steps=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = vis.render(f, vis.channel("relu", 0), key=KEY, shape=(1, 16), steps=16)
        assert float(out.value) > 0  # a live unit: no warning
        # Under jit the values are not concrete: no check, no warning.
        value = jax.jit(lambda k: vis.render(f, vis.channel("relu", 1), key=k, shape=(1, 16),
                                             steps=16).value)(KEY)
        assert float(value) == 0.0


def test_colour_decorrelation_checks_the_channel_axis():
    rng = np.random.default_rng(0)
    nhwc = jnp.asarray(rng.uniform(size=(5, 8, 8, 3)), jnp.float32)
    nchw = jnp.moveaxis(nhwc, -1, 1)
    with pytest.raises(ValueError, match=r"8 channels on their last axis.*channel_axis=1"):
        vis.colour_decorrelation(nchw)
    expected = vis.colour_decorrelation(nhwc)
    assert expected.shape == (3, 3)
    np.testing.assert_allclose(vis.colour_decorrelation(nchw, channel_axis=1), expected,
                               rtol=1e-5, atol=1e-6)
    many = vis.colour_decorrelation(jnp.moveaxis(nhwc, 1, -1), channel_axis=-1)
    assert many.shape == (8, 8)  # an explicit axis takes any number of channels
    with pytest.raises(ValueError, match="non-batch axis"):
        vis.colour_decorrelation(nhwc, channel_axis=0)
    with pytest.raises(ValueError, match="4-D"):
        vis.colour_decorrelation(nhwc[0])


def test_learning_rate_and_parameterization_floats_reuse_the_compiled_loop():
    f = tiny_cnn()
    kw = dict(key=KEY, shape=SHAPE, steps=4)
    obj = vis.channel("relu_1", 1)
    vis.render(f, obj, learning_rate=0.1, **kw)
    vis.render(f, obj, param=vis.Fourier(std=0.5, decay=1.0), **kw)
    before = _render._render._cache_size()
    vis.render(f, obj, learning_rate=0.2, **kw)
    vis.render(f, obj, param=vis.Fourier(std=1.0, decay=2.0), **kw)
    vis.render(f, obj, param=vis.Pixel(std=0.3), **kw)
    assert _render._render._cache_size() == before
    vis.render(f, obj, param=vis.Fourier(squash="clip"), **kw)
    assert _render._render._cache_size() > before  # the counter does see a new structure


def test_a_module_given_for_f_says_how_to_wrap_it():
    import equinox as eqx
    net = eqx.nn.Linear(4, 2, key=KEY)
    with pytest.raises(TypeError, match=r"Equinox module .*as_function\(model\)"):
        vis.render(net, vis.channel("linear", 0), key=KEY, shape=(1, 4), steps=2)
