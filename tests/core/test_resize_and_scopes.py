"""Resampling products are no layers, dead values are no sites, reused scopes are reported.

``jax.image.resize`` interpolates with matrices that the program builds from ``iota``: a
``dot_general`` along height or width. It keeps the channel axis, is no ``linear`` site, and
LRP passes the plain gradient through it (as Zennit does through ``F.interpolate``). A product
with a stored weight stays a dense layer whatever axis it contracts (MLP-Mixer token mixing).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import lrp as L
from jaxplain.attribution import grad_cam, lrp
from jaxplain.core._backward import linear_layer_names
from jaxplain.core._capture import program_of

K = jax.random.normal(jax.random.key(1), (3, 3, 2, 5)) * 0.3  # HWIO
HEAD = jax.random.normal(jax.random.key(2), (5, 3))


def _up(x):  # (n, 4, 4, 5) -> (n, 8, 6, 5), bilinear along height and width
    return jax.image.resize(x, (x.shape[0], 8, 6, x.shape[-1]), "bilinear")


def _conv(x, spec="NHWC"):
    return jax.lax.conv_general_dilated(x, K, (1, 1), "SAME",
                                        dimension_numbers=(spec, "HWIO", spec))


def nhwc(x):  # (n, 4, 4, 2) -> (n, 3)
    return jax.nn.relu(_up(_conv(x))).mean((1, 2)) @ HEAD


def test_a_resize_keeps_the_channels_and_is_no_linear_site():
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 2))
    found = {s.name: s for s in jp.sites(nhwc, x)}
    assert [s.name for s in found.values() if s.kind == "linear"] == ["conv", "linear"]
    assert found["relu"].shape == (2, 8, 6, 5) and found["relu"].channel_axis == -1
    _, acts = jp.capture(nhwc, "relu")(x)
    np.testing.assert_allclose(acts["relu"], jax.nn.relu(_up(_conv(x))), rtol=1e-6)
    assert grad_cam(nhwc, x, 0, site="relu", resize=False).shape == (2, 8, 6)
    assert linear_layer_names(nhwc, x) == ("conv", "linear")


def test_a_resize_of_nchw_features_keeps_their_channel_axis():
    def nchw(x):  # (n, 2, 4, 4) -> (n, 3)
        h = _conv(x, "NCHW")
        up = jax.image.resize(h, h.shape[:2] + (8, 6), "bilinear")
        return jax.nn.relu(up).mean((2, 3)) @ HEAD

    x = jax.random.normal(jax.random.key(0), (2, 2, 4, 4))
    relu = next(s for s in jp.sites(nchw, x) if s.name == "relu")
    assert relu.channel_axis == 1 and relu.shape == (2, 8, 6, 5)  # presented channels-last


def test_lrp_passes_the_plain_gradient_through_a_resize():
    """f = w . resize(x), relevance 1 at the output: Epsilon(1) at the head gives the resized
    image z the relevance z w / (f + sign f), which the resize's transpose takes back to x."""
    w = jax.random.normal(jax.random.key(3), (8 * 6 * 2,))

    def f(x):  # (n, 4, 4, 2) -> (n, 1)
        return (_up(x).reshape(x.shape[0], -1) @ w)[:, None]

    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 2))
    z, back = jax.vjp(_up, x)
    y = f(x)[:, 0]
    (want,) = back(z * w.reshape(z.shape[1:]) / (y + jnp.sign(y))[:, None, None, None])
    np.testing.assert_allclose(lrp(f, x, 0, rules=L.Epsilon(1.0)), want, rtol=1e-4, atol=1e-6)


def test_products_with_stored_weights_stay_dense_layers():
    tokens = jax.random.normal(jax.random.key(4), (6, 6))  # MLP-Mixer's token mixing
    channels = jax.random.normal(jax.random.key(5), (4, 4))

    def mixer(x):  # (n, 6 tokens, 4 channels)
        mixed = jnp.swapaxes(jnp.swapaxes(x, 1, 2) @ tokens, 1, 2)
        return jax.nn.relu(mixed @ channels)

    def built(x):  # a dense layer whose weight the model draws itself, over the features
        return jax.nn.relu(x @ jax.random.normal(jax.random.key(0), (4, 3)))

    x = jnp.ones((2, 6, 4))
    assert [s.name for s in jp.sites(mixer, x) if s.kind == "linear"] == ["linear", "linear_1"]
    with pytest.warns(jp.core.StochasticModelWarning):  # drawn on purpose: the warning says so
        assert [s.kind for s in jp.sites(built, x)] == ["linear", "activation"]


def test_a_value_the_outputs_never_use_is_no_site():
    def f(x):
        jax.nn.relu(_up(_conv(x)) @ jnp.ones((5, 5)))  # a dead branch
        return jax.nn.tanh(_conv(x)).mean((1, 2)) @ HEAD

    x = jnp.ones((2, 4, 4, 2))
    assert [s.name for s in jp.sites(f, x)] == ["conv_1", "tanh", "linear_1"]
    # an ablation that cuts a site off leaves it a site of the edited function
    ablated = jp.intervene(f, {"tanh": jnp.zeros_like})
    assert {"conv_1", "tanh"} <= {s.name for s in jp.sites(ablated, x)}


def test_a_scope_entered_several_times_is_reported():
    w = jax.random.normal(jax.random.key(0), (4, 4)) * 0.5

    def loop(x):  # the same named_scope around each layer: one site, the last layer's
        for _ in range(3):
            with jax.named_scope("resid"):
                x = x + jnp.tanh(x @ w)
        with jax.named_scope("out"):
            return x @ w[:, :2]

    class Shared(nn.Module):  # one Flax module called three times
        @nn.compact
        def __call__(self, x):
            block = nn.Dense(4, name="block")
            for _ in range(3):
                x = x + jnp.tanh(block(x))
            return nn.Dense(2, name="head")(x)

    x = jnp.ones((2, 4))
    assert program_of(loop, x)[1].reused == {"resid": 3}
    variables = Shared().init(jax.random.key(0), x)
    assert program_of(jp.as_function(Shared(), variables), x)[1].reused == {"block": 3}
    with pytest.warns(UserWarning, match=r"scope 'resid' looks entered 3 times"):
        jp.sites(loop, x)


def test_a_convolution_after_a_resize_of_the_input_is_the_input_layer():
    def upsampled(x):  # (n, 4, 4, 2) -> (n, 3): resize the input, then the first conv
        return jax.nn.relu(_conv(jax.image.resize(x, (x.shape[0], 8, 8, 2), "bilinear"))
                           ).mean((1, 2)) @ HEAD

    x = jax.random.uniform(jax.random.key(0), (2, 4, 4, 2))
    first = lrp(upsampled, x, 0, rules=L.Composite(first=L.Flat(), default=L.Epsilon()))
    named = lrp(upsampled, x, 0, rules=L.Composite(layers=(("conv", L.Flat()),),
                                                    default=L.Epsilon()))
    np.testing.assert_allclose(first, named, rtol=1e-6, atol=1e-9)
    assert not np.allclose(first, lrp(upsampled, x, 0, rules=L.Epsilon()), atol=1e-4)


def test_a_square_or_vector_matrix_built_in_f_stays_a_linear_layer():
    # Only a matrix that maps an axis to another size resamples; jnp.tril(jnp.ones) (a
    # cumulative sum) and a jnp.full readout are linear layers, as the same NumPy constants.
    w1 = jax.random.normal(jax.random.key(0), (3, 4))
    w2 = jax.random.normal(jax.random.key(1), (4, 2))
    head = lambda h: jax.nn.relu(h @ w1).mean(1) @ w2  # noqa: E731
    built = [lambda x: head(jnp.einsum("ij,bjf->bif", jnp.tril(jnp.ones((5, 5))), x)),
             lambda x: jnp.einsum("bnh,n->bh", jax.nn.relu(x @ w1), jnp.full(5, 0.5)) @ w2]
    x = jax.random.normal(jax.random.key(2), (4, 5, 3))
    for f in built:
        assert len(linear_layer_names(f, x)) == 3
        np.testing.assert_allclose(lrp(f, x, 0, rules=L.Epsilon(1e-9)).sum((1, 2)), 1.0,
                                   rtol=1e-4)
