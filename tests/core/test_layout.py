"""fast_convolutions: the same values and gradients for every convolution layout, under jit and
vmap, and only fast-layout (NHWC / HWIO) convolutions left in a loop body on CPU."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain.core._layout import fast_convolutions

FAST = "b01f_01io->b01f"
# (input layout, kernel layout, output layout, strides, rhs dilation, feature groups)
CASES = [
    ("NHWC", "HWIO", "NHWC", (1, 1), (1, 1), 1),
    ("NCHW", "OIHW", "NCHW", (2, 1), (1, 2), 2),
    ("NHWC", "OIHW", "NCHW", (1, 2), (2, 1), 1),
    ("NHWC", "HWIO", "NHWC", (2, 2), (1, 1), 2),
    ("NWC", "WIO", "NWC", (1,), (1,), 1),
]


def _conv_loss(layouts, strides, dilation, groups):
    """loss(x) of one convolution in `layouts` (every operand possibly permuted), and an x."""
    lhs, rhs, _ = layouts
    c_in, c_out = 4, 6
    size = {"O": c_out, "I": c_in // groups, **{a: 3 for a in rhs if a not in "OI"}}
    w = jax.random.normal(jax.random.key(0), tuple(size[a] for a in rhs))

    def loss(x):
        y = jax.lax.conv_general_dilated(x, w, strides, "SAME", rhs_dilation=dilation,
                                         dimension_numbers=layouts, feature_group_count=groups)
        return jnp.sum(jnp.tanh(y) ** 2)

    shape = {"N": 3, "C": c_in, **{a: 7 for a in lhs if a not in "NC"}}
    return loss, jax.random.normal(jax.random.key(1), tuple(shape[a] for a in lhs))


def _nested_site_loss():
    """A model's site read through `capture` (a nested jit, whose body is rewritten too)."""
    w1 = jax.random.normal(jax.random.key(2), (3, 3, 1, 4)) * 0.5
    w2 = jax.random.normal(jax.random.key(3), (3, 3, 4, 5)) * 0.3
    dn = ("NHWC", "HWIO", "NHWC")

    def f(x):
        h = jax.nn.relu(jax.lax.conv_general_dilated(x, w1, (1, 1), "SAME", dimension_numbers=dn))
        h = jax.nn.relu(jax.lax.conv_general_dilated(h, w2, (1, 1), "SAME", dimension_numbers=dn))
        return h.mean((1, 2))

    def loss(x):
        _, acts = jp.capture(f, "relu_1")(x)
        return jnp.sum(acts["relu_1"][..., 2])

    return loss, jax.random.uniform(jax.random.key(4), (4, 8, 8, 1))


@pytest.mark.parametrize("lhs, rhs, out, strides, dilation, groups", CASES)
def test_values_and_gradients_are_unchanged(lhs, rhs, out, strides, dilation, groups):
    loss, x = _conv_loss((lhs, rhs, out), strides, dilation, groups)
    plain = jax.value_and_grad(loss)(x)
    fast = fast_convolutions(jax.value_and_grad(loss))(x)
    np.testing.assert_allclose(float(fast[0]), float(plain[0]), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(fast[1]), np.asarray(plain[1]), rtol=1e-4, atol=1e-5)


def test_nested_jit_under_jit_and_vmap():
    loss, x = _nested_site_loss()
    plain = jax.value_and_grad(loss)(x)
    fast = fast_convolutions(jax.value_and_grad(loss))(x)
    np.testing.assert_allclose(fast[0], plain[0], rtol=1e-5)
    np.testing.assert_allclose(fast[1], plain[1], rtol=1e-4, atol=1e-6)
    batched = jax.jit(jax.vmap(fast_convolutions(jax.grad(loss))))(x[:, None])
    np.testing.assert_allclose(batched[:, 0], plain[1], rtol=1e-4, atol=1e-6)


def _loop_layouts(step, x):
    run = jax.jit(lambda x: jax.lax.scan(lambda c, _: (c - 0.1 * step(c), None), x, None,
                                         length=3)[0])
    return set(re.findall(r"dim_labels=([^,\s]+)", run.lower(x).compile().as_text()))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rewrite applies on CPU only")
def test_every_convolution_in_a_loop_is_in_the_fast_layout():
    for loss, x in (_nested_site_loss(), _conv_loss(CASES[1][:3], *CASES[1][3:])):
        # without the rewrite XLA:CPU keeps the slow layouts inside the loop (the gradient's
        # kernel with in/out swapped, "..._01oi->...", or NCHW's "bf01_...") ...
        assert _loop_layouts(jax.grad(loss), x) != {FAST}
        # ... and with it only the fast one is left, forward and backward
        assert _loop_layouts(fast_convolutions(jax.grad(loss)), x) == {FAST}


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rewrite applies on CPU only")
def test_cond_branches_are_rewritten_with_their_values_kept():
    conv, x = _conv_loss(CASES[1][:3], *CASES[1][3:])

    def loss(x):  # the branch taken depends on the data; each holds a convolution
        return jax.lax.cond(x.sum() > 0, conv, lambda z: 2.0 * conv(-z), x)

    for sign in (1.0, -1.0):
        xs = jnp.abs(x) * sign
        plain = jax.value_and_grad(loss)(xs)
        fast = fast_convolutions(jax.value_and_grad(loss))(xs)
        np.testing.assert_allclose(fast[0], plain[0], rtol=1e-5)
        np.testing.assert_allclose(fast[1], plain[1], rtol=1e-4, atol=1e-5)
    assert _loop_layouts(fast_convolutions(jax.grad(loss)), x) == {FAST}
