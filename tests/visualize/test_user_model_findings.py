"""Findings of a trial on users' own models: render's channel_axis= for a channels-first model
whose layout cannot be read (and the warning where it cannot), class objectives on a model with
a 1-D output, neuron_groups' bound on groups, and custom objectives with Optional[str] fields."""

import dataclasses
import functools
import warnings
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import visualize as vis

C, H, W = 3, 8, 12
_K = jax.random.split(jax.random.key(0), 3)
MIX = jax.random.normal(_K[0], (C, C))
KERNEL = jax.random.normal(_K[1], (4, C, 3, 3)) * 0.3  # OIHW


def mixed_nchw(x):
    """An NCHW model with a colour-mixing matmul before its first convolution (the search for
    its input channels is lost there). Logit 0: the spread of each channel plane it reads,
    summed; logit 1: a conv feature."""
    mixed = jnp.einsum("dc,bchw->bdhw", MIX, x)
    y = jax.lax.conv_general_dilated(mixed, KERNEL, (1, 1), "SAME",
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
    spread = jnp.sum(x.max((2, 3)) - x.min((2, 3)), axis=1)
    return jnp.stack([spread, jax.nn.relu(y).mean((1, 2, 3))], -1)


def token_mlp(x):
    """A model without convolution: flattens whatever it gets, (b, ...) -> (b, 2)."""
    return jnp.tanh(x.reshape(x.shape[0], -1) @ jnp.ones((x[0].size, 2)) / x[0].size)


@functools.partial(jax.tree_util.register_dataclass, data_fields=[], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class Planes:
    """A parameterization whose NHWC images are constant over each channel plane: one value
    per channel."""

    def init(self, key, shape):
        return jnp.arange(1.0, shape[-1] + 1.0)

    def image(self, params, shape):
        return jnp.broadcast_to(params, shape)


def _render(f, shape, **options):
    return vis.render(f, vis.class_logit(1), key=jax.random.key(0), shape=shape, steps=2,
                      **options)


def test_channel_axis_puts_the_fourier_basis_on_the_image_plane():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = _render(mixed_nchw, (1, C, H, W), channel_axis=1, param=vis.Fourier(),
                      transforms=(vis.Jitter(1),))
    assert out.params.shape == (2, 1, C, H, W // 2 + 1)   # (re/im, k, c, h, w // 2 + 1)
    assert out.images.shape == (1, C, H, W)               # the model's own layout
    negative = _render(mixed_nchw, (1, C, H, W), channel_axis=-3, param=vis.Fourier())
    assert negative.params.shape == out.params.shape


def test_with_channel_axis_transforms_keep_channel_planes_constant():
    """Jitter, Rotate and Scale move pixels within the (h, w) plane, so the constant planes of
    Planes stay constant in what the model reads (logit 0, the summed spread, stays 0) and
    distinct; read along the wrong axes they would mix rows of different channels."""
    transforms = (vis.Jitter(2), vis.Rotate((30.0,)), vis.Scale((1.2,)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # no gradient reaches the spread
        out = vis.render(mixed_nchw, vis.class_logit(0), key=jax.random.key(1),
                         shape=(2, C, H, W), steps=3, param=Planes(), transforms=transforms,
                         channel_axis=1)
    assert np.max(np.abs(out.trace)) < 1e-5
    images = np.asarray(out.images)                       # (2, C, H, W)
    np.testing.assert_allclose(images, images[:, :, :1, :1] * np.ones((1, 1, H, W)), atol=1e-6)
    means = images.mean((0, 2, 3))
    assert len(set(np.round(means, 4))) == C


def test_lost_layout_warns_with_the_op_and_the_fix():
    with pytest.warns(UserWarning, match=r"lost at dot_general.*channel_axis=1"):
        _render(mixed_nchw, (1, C, H, W), param=vis.Fourier())


@pytest.mark.parametrize("options", [dict(param=vis.Fourier()),
                                     dict(transforms=(vis.Jitter(1),)),
                                     dict(regularizers=(vis.TotalVariation(0.1),))],
                         ids=["fourier", "jitter", "tv"])
def test_no_convolution_and_a_small_first_axis_warns(options):
    with pytest.warns(UserWarning, match=r"no convolution.*channel_axis=1"):
        _render(token_mlp, (1, C, H, W), **options)


@pytest.mark.parametrize("shape, options", [
    ((1, H, W, C), dict(param=vis.Fourier(), transforms=(vis.Jitter(1),))),  # NHWC, no conv
    ((1, C, H, W), dict()),                                    # pixels alone: layout-free
    ((1, C, H, W), dict(param=vis.Fourier(), channel_axis=-1)),  # the caller confirms NHWC
], ids=["nhwc-no-conv", "pixels-only", "confirmed"])
def test_no_warning_where_channels_last_is_the_reading(shape, options):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _render(token_mlp, shape, **options)


@pytest.mark.parametrize("axis", [0, 4, -4, 1.0, True])
def test_channel_axis_must_be_a_non_batch_axis(axis):
    with pytest.raises(ValueError, match="channel_axis must name a non-batch axis"):
        _render(mixed_nchw, (1, C, H, W), channel_axis=axis)


def score(x):
    """One score per image, (b,)."""
    return jnp.tanh(x.reshape(x.shape[0], -1).sum(-1))


@pytest.mark.parametrize("k, index", [(1, 0), (1, 1), (2, 0), (2, 1)])
def test_class_objective_on_a_1d_output_says_what_to_do(k, index):
    with pytest.raises(ValueError, match=rf"f returns shape \({k},\).*\(b, classes\)"):
        vis.render(score, vis.class_logit(index), key=jax.random.key(0), shape=(k, 4, 4, 1),
                   steps=2)


def test_site_attribution_of_a_class_on_a_1d_output_says_the_same():
    f = lambda x: score(jax.nn.relu(x))
    with pytest.raises(ValueError, match=r"f returns shape \(2,\).*\(b, classes\)"):
        vis.site_attribution(f, jnp.ones((2, 4, 4, 1)), vis.class_probability(0), site="relu")


def test_neuron_groups_bounds_groups_by_the_site_channels():
    kernel = jax.random.normal(jax.random.key(0), (3, 3, 1, 6))
    f = lambda x: jax.nn.relu(jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))).mean((1, 2))
    x = jax.random.uniform(jax.random.key(1), (3, 5, 5, 1))
    with pytest.raises(ValueError, match=r"groups must be an int in \[1, 6\].*6 channels") as e:
        vis.neuron_groups(f, x, site="relu", groups=7, key=jax.random.key(0))
    assert "rank" not in str(e.value)
    ok = vis.neuron_groups(f, x, site="relu", groups=np.int64(6), key=jax.random.key(0), steps=5)
    assert ok.directions.shape == (6, 6)


def _site_objective(annotation):
    """A custom objective reading one site, its ``site`` field annotated ``annotation``."""

    @dataclasses.dataclass(frozen=True, eq=False)
    class MySite(vis.Objective):
        site: annotation = None
        weight: float = 1.0

        def sites(self):
            return (self.site,)

        def __call__(self, acts, logits, x):
            return self.weight * jnp.sum(acts[self.site])

    return MySite


def tiny_conv(x):
    kernel = jnp.linspace(-1.0, 1.0, 3 * 3 * 1 * 4).reshape(3, 3, 1, 4)
    return jax.nn.relu(jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))).mean((1, 2))


@pytest.mark.parametrize("annotation", [Optional[str], str | None, "Optional[str]",
                                        "str | None", "None | str", "typing.Union[str, None]",
                                        "Optional[bool]"],
                         ids=repr)
def test_optional_str_fields_are_static(annotation):
    obj = _site_objective(annotation)("relu")
    assert jax.tree_util.tree_leaves(obj) == [1.0]           # the weight only
    out = vis.render(tiny_conv, obj, key=jax.random.key(0), shape=(1, 5, 5, 1), steps=2)
    assert np.isfinite(out.value)


@pytest.mark.parametrize("annotation", [Any, "Optional[int]", "None"], ids=repr)
def test_a_string_in_a_leaf_field_names_the_field_and_the_fix(annotation):
    obj = _site_objective(annotation)("relu")
    match = r"MySite\.site .*str \'relu\'.*metadata=\{\"static\": True\}"
    with pytest.raises(TypeError, match=match):
        vis.render(tiny_conv, obj, key=jax.random.key(0), shape=(1, 5, 5, 1), steps=2)
    with pytest.raises(TypeError, match=r"MySite\.site "):          # inside a sum, in a list
        vis.render(tiny_conv, [obj + vis.channel("relu", 0)], key=jax.random.key(0),
                   shape=(1, 5, 5, 1), steps=2)
