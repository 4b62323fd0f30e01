"""cpu_canonical_convs: same values and gradients, and only fast-layout convolutions in a loop."""

import re

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jp
from jaxplain.visualize._layout import cpu_canonical_convs
from tests.visualize._models import digits_images, tiny_cnn

F = tiny_cnn()
X = jnp.asarray(digits_images(4))
RNG = np.random.default_rng(0)
W = jnp.asarray(RNG.normal(size=(6, 4, 3, 2)), jnp.float32)  # OIHW: 2 groups of 4 inputs
X8 = jnp.asarray(RNG.normal(size=(2, 9, 8, 8)), jnp.float32)


def _nchw(x):
    """A strided, dilated, grouped convolution in NCHW / OIHW / NCHW: every operand permuted."""
    y = jax.lax.conv_general_dilated(jnp.moveaxis(x, -1, 1), W, (2, 1), [(1, 2), (0, 1)],
                                     rhs_dilation=(1, 2), dimension_numbers=("NCHW", "OIHW",
                                                                             "NCHW"),
                                     feature_group_count=2)
    return jnp.sum(jnp.tanh(y) ** 2)


def _site_loss(x):
    _, acts = jp.capture(F, "relu_1")(x)  # a nested jit: its body is rewritten too
    return jnp.sum(acts["relu_1"][..., 2])


def test_values_and_gradients_are_unchanged():
    for loss, x in ((_nchw, X8), (_site_loss, X)):
        plain = jax.value_and_grad(loss)(x)
        fast = cpu_canonical_convs(jax.value_and_grad(loss))(x)
        np.testing.assert_allclose(fast[0], plain[0], rtol=1e-5)
        np.testing.assert_allclose(fast[1], plain[1], rtol=1e-4, atol=1e-6)
        batched = jax.jit(jax.vmap(cpu_canonical_convs(jax.grad(loss))))(x[:, None])
        np.testing.assert_allclose(batched[:, 0], plain[1], rtol=1e-4, atol=1e-6)


def _conv_layouts(step, x):
    run = jax.jit(lambda x: jax.lax.scan(lambda c, _: (c - 0.1 * step(c), None), x, None,
                                         length=3)[0])
    return set(re.findall(r"dim_labels=([^,\s]+)", run.lower(x).compile().as_text()))


def test_every_convolution_in_a_loop_is_in_the_fast_layout():
    # Without the rewrite the gradient of the NHWC/HWIO model shows "b01f_01oi->b01f" (its
    # kernel's in/out swapped) and the NCHW one "bf01_..." layouts: XLA:CPU leaves them so in a
    # while loop and runs them with a slow generic loop nest.
    for loss, x in ((_site_loss, X), (_nchw, X8)):
        layouts = _conv_layouts(cpu_canonical_convs(jax.grad(loss)), x)
        assert layouts == {"b01f_01io->b01f"}, layouts
