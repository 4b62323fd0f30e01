"""The fast-layout rewrite keeps values and gradients, and leaves loop bodies with only
NHWC / HWIO convolutions; each optimisation phase is one lax.scan."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import subnet
from jaxplain.subnet import _optimize
from jaxplain.subnet._extract import _phase, _search_init
from jaxplain.subnet._layout import fast_convolutions
from tests.subnet import _nets

# (input layout, kernel layout, output layout, strides, rhs dilation, feature groups)
CASES = [
    ("NHWC", "HWIO", "NHWC", (1, 1), (1, 1), 1),
    ("NCHW", "OIHW", "NCHW", (2, 1), (1, 1), 1),
    ("NHWC", "OIHW", "NCHW", (1, 2), (2, 1), 1),
    ("NHWC", "HWIO", "NHWC", (2, 2), (1, 1), 2),
    ("NWC", "WIO", "NWC", (1,), (1,), 1),
]


def _conv_net(layouts, strides, dilation, groups):
    lhs, rhs, out = layouts
    spatial = len(lhs) - 2
    c_in, c_out = 4, 6
    w_shape = {"O": c_out, "I": c_in // groups, **{a: 3 for a in rhs if a not in "OI"}}
    w = jax.random.normal(jax.random.key(0), tuple(w_shape[a] for a in rhs))

    def f(x, s):
        y = jax.lax.conv_general_dilated(
            x * s, w, strides, "SAME", rhs_dilation=dilation, dimension_numbers=layouts,
            feature_group_count=groups)
        return jnp.sum(jnp.tanh(y) ** 2)

    shape = {"N": 3, "C": c_in, **{a: 7 for a in lhs if a not in "NC"}}
    x = jax.random.normal(jax.random.key(1), tuple(shape[a] for a in lhs))
    s_shape = tuple(c_in if a == "C" else 1 for a in lhs)
    assert spatial == len(strides)
    return f, x, jnp.linspace(0.5, 1.5, c_in).reshape(s_shape)


@pytest.mark.parametrize("lhs, rhs, out, strides, dilation, groups", CASES)
def test_values_and_gradients_are_unchanged(lhs, rhs, out, strides, dilation, groups):
    f, x, s = _conv_net((lhs, rhs, out), strides, dilation, groups)
    g = jax.value_and_grad(f, argnums=(0, 1))
    (v0, (gx0, gs0)), (v1, (gx1, gs1)) = g(x, s), fast_convolutions(g)(x, s)
    np.testing.assert_allclose(float(v1), float(v0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gx1), np.asarray(gx0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gs1), np.asarray(gs0), rtol=1e-4, atol=1e-5)


def _setup(steps):
    f, x, _ = _nets.planted(0.01)
    opts = subnet.Options(l1=(1e-3, 1e-2), steps=steps)
    logp, state, masks = _search_init(x, f=f, names=_nets.SITES, units=(24, 24, 24), opts=opts)
    l1 = jnp.asarray([1e-3, 1e-2], jnp.float32)
    target = jnp.asarray(1.0, jnp.float32)

    def chunk(state, fast=True):
        return _optimize._run_chunk(state, masks, l1, l1, target, x, logp, f=f, length=steps,
                                    phase=_phase(opts, search=True), fast=fast)

    return chunk, state


def _conv_labels(chunk, state, fast):
    hlo = jax.jit(chunk, static_argnames="fast").lower(state, fast=fast).compile().as_text()
    return re.findall(r"convolution\(.*dim_labels=([\w>-]+)", hlo)


def test_the_optimisation_loop_uses_only_the_fast_layout():
    chunk, state = _setup(5)
    plain = _conv_labels(chunk, state, fast=False)
    fast = _conv_labels(chunk, state, fast=True)
    # The backward pass of an HWIO convolution uses the kernel as HWOI ("01oi") ...
    assert any(label != "b01f_01io->b01f" for label in plain), plain
    # ... and the rewrite leaves only NHWC / HWIO convolutions, forward and backward.
    assert fast and all(label == "b01f_01io->b01f" for label in fast), fast
    a, b = chunk(state, fast=True), chunk(state, fast=False)
    np.testing.assert_allclose(np.asarray(a["history"]), np.asarray(b["history"]), rtol=1e-5,
                               atol=1e-7)


def test_each_phase_is_one_scan_with_the_whole_optimisation_inside():
    chunk, state = _setup(50)
    closed = jax.make_jaxpr(chunk)(state)
    (inner,) = [e.params["jaxpr"].jaxpr for e in closed.jaxpr.eqns
                if e.primitive.name in ("pjit", "jit")]
    scans = [e for e in inner.eqns if e.primitive.name == "scan"]
    assert len(scans) == 1 and scans[0].params["length"] == 50
    body = {e.primitive.name for e in scans[0].params["jaxpr"].jaxpr.eqns}
    assert "conv_general_dilated" in body  # the model's forward and backward, every step
