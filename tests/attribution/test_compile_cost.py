"""What the LRP rules cost to compile: no batch-sized work that depends on no input.

A rule term such as ZBox's ``W+ l`` or Flat's ``1 1`` depends on no input; computed on the whole
batch, XLA folded it into a constant while compiling, a batch-sized convolution in its slow
evaluator (EpsilonGammaBox on a ResNet-18 at batch 128 took 13 s to compile against 5 s for
EpsilonPlusFlat). The rules compute such terms on one example and broadcast them.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain.attribution._lrp import _lrp
from jaxplain.attribution._lrp_rules import share, transpose
from jaxplain.core import LinearLayer
from jaxplain.lrp import (Composite, Epsilon, EpsilonGammaBox, EpsilonPlusFlat, Flat, WSquare,
                          ZBox, ZPlus)

N = 6  # a batch size no other axis of these models has


def _conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _layer(op="conv"):
    kw, kb = jax.random.split(jax.random.key(0))
    if op == "conv":
        w, apply, axis, batch = jax.random.normal(kw, (3, 3, 3, 4)), _conv, 3, 0
    elif op == "conv_hwcn":  # batch last: SAME padding and stride 1 keep a 1-row input 1 row
        w, apply, axis, batch = jax.random.normal(kw, (3, 3, 3, 4)), _conv_hwcn, 2, 3
    else:  # a dense layer reading the first axis: its examples are on the second
        w, apply, axis, batch = jax.random.normal(kw, (3, 4)), (lambda v, w: (v.T @ w).T), 0, None
    b = 0.1 * jax.random.normal(kb, (4,) if op == "conv" else (4, 1))
    return LinearLayer("layer", op, w, b, apply, True, axis, batch)


def _conv_hwcn(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                        dimension_numbers=("HWCN", "HWIO", "HWCN"))


def _x(shape):
    return jax.random.uniform(jax.random.key(1), shape)


def _whole_batch(rule, layer, x, g):
    """The rules' former formulas: input-free terms computed on the whole batch."""
    w = layer.weight
    wp, wn = jnp.maximum(w, 0), jnp.minimum(w, 0)
    if isinstance(rule, ZBox):
        lo = jnp.broadcast_to(_per_channel(rule.low, x, layer.in_axis), x.shape)
        hi = jnp.broadcast_to(_per_channel(rule.high, x, layer.in_axis), x.shape)
        z = layer.apply(x, w) - layer.apply(lo, wp) - layer.apply(hi, wn)
        s = share(g, z, rule.stabilizer)
        return (x * transpose(layer, x, w, s) - lo * transpose(layer, x, wp, s)
                - hi * transpose(layer, x, wn, s))
    w1 = jnp.ones_like(w) if isinstance(rule, Flat) else w ** 2
    bias = 0 if isinstance(rule, Flat) else layer.bias ** 2
    s = share(g, layer.apply(jnp.ones_like(x), w1) + bias, rule.stabilizer)
    return transpose(layer, x, w1, s)


def _per_channel(value, x, axis):
    v = jnp.asarray(value, x.dtype)
    if v.ndim == 1 and v.shape[0] == x.shape[axis] > 1:
        v = v.reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return v


def _input_free_outputs(jaxpr, inputs) -> list:
    """The shapes of the convolutions and products of `jaxpr` that depend on none of `inputs`
    (jaxpr variables), nested jaxprs included."""
    found, depends = [], set(inputs)
    for eqn in jaxpr.eqns:
        flags = [not isinstance(v, jax.extend.core.Literal) and v in depends for v in eqn.invars]
        if any(flags):
            depends.update(eqn.outvars)
        elif eqn.primitive.name in ("conv_general_dilated", "dot_general"):
            found.append(tuple(eqn.outvars[0].aval.shape))
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            if len(sub.invars) != len(flags):  # inputs not one to one: all or none dependent
                flags = [any(flags)] * len(sub.invars)
            found += _input_free_outputs(sub, [v for v, f in zip(sub.invars, flags) if f])
    return found


@pytest.mark.parametrize("rule", [ZBox(0.0, 1.0), ZBox((0.0, -1.0, 0.5), (1.0, 2.0, 1.5)),
                                  Flat(), WSquare()], ids=repr)
@pytest.mark.parametrize("op", ["conv", "conv_hwcn", "dense"])
def test_input_free_terms_on_one_example(rule, op):
    layer = _layer(op)
    x = _x({"conv": (N, 5, 5, 3), "conv_hwcn": (7, 5, 3, N), "dense": (3, N)}[op])
    g = jax.random.normal(jax.random.key(2), jax.eval_shape(layer, x).shape)
    closed = jax.make_jaxpr(lambda x, g: rule.linear(layer, x, g))(x, g)
    shapes = _input_free_outputs(closed.jaxpr, closed.jaxpr.invars)
    assert shapes, "the rule has no input-free term here: the test tests nothing"
    if op == "conv":  # batch first: one example's worth
        assert all(s[0] == 1 for s in shapes), shapes
    else:  # the examples are not on the first axis (for HWCN a 1-row input would still give
        # a 1-row output): the whole batch, as before
        assert all(N in s for s in shapes), shapes
    np.testing.assert_allclose(rule.linear(layer, x, g), _whole_batch(rule, layer, x, g),
                               rtol=1e-5, atol=1e-6)


def test_per_example_bounds_stay_exact():
    """Batch-shaped bounds (one box per example) are used as given, on the whole batch."""
    layer, x = _layer(), _x((N, 5, 5, 3))
    low = -jax.random.uniform(jax.random.key(3), (N, 1, 1, 3))
    rule = ZBox(np.asarray(low), 1.0)
    g = jax.random.normal(jax.random.key(2), (N, 5, 5, 4))
    closed = jax.make_jaxpr(lambda x, g: rule.linear(layer, x, g))(x, g)
    assert (N, 5, 5, 4) in _input_free_outputs(closed.jaxpr, closed.jaxpr.invars)
    np.testing.assert_allclose(rule.linear(layer, x, g), _whole_batch(rule, layer, x, g),
                               rtol=1e-5, atol=1e-6)
    one = jax.vmap(lambda xi, gi, li: ZBox(li, 1.0).linear(layer, xi[None], gi[None])[0],
                   in_axes=(0, 0, None))
    for i in range(N):  # example i explained alone with its own box
        np.testing.assert_allclose(rule.linear(layer, x, g)[i],
                                   one(x[i:i + 1], g[i:i + 1], np.asarray(low[i, 0, 0]))[0],
                                   rtol=1e-5, atol=1e-6)


def _net():
    k = jax.random.split(jax.random.key(4), 3)
    w1, w2 = jax.random.normal(k[0], (3, 3, 3, 4)), jax.random.normal(k[1], (3, 3, 4, 5))
    wd = jax.random.normal(k[2], (5, 3))
    return lambda x: jax.nn.relu(_conv(jax.nn.relu(_conv(x, w1)), w2)).mean((1, 2)) @ wd


@pytest.mark.parametrize("rules", [EpsilonGammaBox(0.0, 1.0), EpsilonPlusFlat(),
                                   Composite(first=WSquare(), conv=ZPlus(), dense=Epsilon())],
                         ids=["EpsilonGammaBox", "EpsilonPlusFlat", "WSquare first"])
def test_no_batch_sized_constant_in_the_compiled_lrp(rules):
    """The weights are closed over (constants), as with ``jaxplain.as_function``: an input-free
    term computed on the batch was folded into a constant of the batch's shape."""
    x, t = _x((N, 7, 7, 3)), jnp.zeros(N, jnp.int32)
    text = _lrp.lower(_net(), x, t, rules=rules, scale=False).compile().as_text()
    constants = re.findall(r"f32\[([\d,]*)\]\{[^}]*\} constant\(", text)
    assert not [c for c in constants if c.startswith(f"{N},")], constants
