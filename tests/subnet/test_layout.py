"""NeuroChains' optimisation loop: only NHWC / HWIO convolutions in it (the fast-layout rewrite of
jaxplain.core._layout, tested on its own in tests/core/test_layout.py), and each phase is one
lax.scan."""

import re

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import subnet
from jaxplain.subnet import _optimize
from jaxplain.subnet._extract import _phase, _search_init
from tests._jaxpr import primitives
from tests.subnet import _nets


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
    body = primitives(scans[0].params["jaxpr"].jaxpr)
    assert "conv_general_dilated" in body  # the model's forward and backward, every step
