"""dissect's inputs: masks in a channels-first model's layout, layouts that contradict x's, and
dissect under jax.jit."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import concepts


class _Net(eqx.Module):
    conv: eqx.nn.Conv2d

    def __call__(self, x):                      # (c, h, w) -> (units,)
        return jax.nn.relu(self.conv(x)).mean(axis=(1, 2))


def _nchw_model():
    return jp.as_function(_Net(eqx.nn.Conv2d(1, 4, 3, padding=1, key=jax.random.key(0))))


def _nhwc_model():
    w = jax.random.normal(jax.random.key(0), (3, 3, 1, 4))

    def f(x):
        h = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.relu(h).mean(axis=(1, 2))

    return f


X = jax.random.uniform(jax.random.key(1), (20, 12, 12, 1))     # NHWC images
MASKS = jnp.concatenate([X > 0.5, X <= 0.5], axis=-1)         # (20, 12, 12, 2): 2 concepts


def test_channels_first_model_takes_masks_in_its_layout():
    f = _nchw_model()
    x, masks = jnp.moveaxis(X, -1, 1), jnp.moveaxis(MASKS, -1, 1)   # (20, 1, 12, 12), (20, 2, ..)
    got = concepts.dissect(f, x, masks, site="relu", quantile=0.9)
    assert got.shape == (4, 2)
    # The same as iou on the site (presented channels-last) with the masks moved to NHWC.
    _, acts = jp.capture(f, "relu")(x)
    np.testing.assert_allclose(got, concepts.iou(acts["relu"], MASKS, quantile=0.9))
    # Masks at another resolution follow the model's layout too.
    small = concepts.dissect(f, x, masks[:, :, ::2, ::2], site="relu", quantile=0.9)
    assert small.shape == (4, 2)


def test_masks_in_the_other_layout_are_a_clear_error():
    f = _nchw_model()
    x = jnp.moveaxis(X, -1, 1)
    with pytest.raises(ValueError, match=r"look channels-last .*channels on axis 1.*"
                                         r"jnp\.moveaxis\(masks, -1, 1\)"):
        concepts.dissect(f, x, MASKS, site="relu")
    with pytest.raises(ValueError, match=r"look channels-first .*\(b, H, W, concepts\).*"
                                         r"jnp\.moveaxis\(masks, 1, -1\)"):
        concepts.dissect(_nhwc_model(), X, jnp.moveaxis(MASKS, -1, 1), site="relu")
    with pytest.raises(ValueError, match=r"b = 20 images"):
        concepts.dissect(_nhwc_model(), X, MASKS[:10], site="relu")
    with pytest.raises(ValueError, match=r"4-D boolean batch"):
        concepts.dissect(_nhwc_model(), X, MASKS[..., 0], site="relu")


def test_dissect_runs_under_jit():
    f = _nhwc_model()
    eager = concepts.dissect(f, X, MASKS, site="relu", quantile=0.9)
    jitted = jax.jit(lambda a, m: concepts.dissect(f, a, m, site="relu", quantile=0.9))(X, MASKS)
    np.testing.assert_allclose(jitted, eager)
    # The masks may be computed from the traced images, as in the docs' example.
    inside = jax.jit(lambda a: concepts.dissect(f, a, jnp.concatenate([a > 0.5, a <= 0.5], -1),
                                                site="relu", quantile=0.9))(X)
    np.testing.assert_allclose(inside, eager)
