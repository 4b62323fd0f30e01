"""Convolutions in XLA:CPU's fast layout, so that loop bodies with convolutions run fast.

XLA:CPU runs a convolution fast when the input is NHWC, the kernel HWIO and the output NHWC.
Outside a loop it transposes other layouts into that one by itself; inside the body of a
``lax.scan`` or ``while_loop`` it does not (observed with jax 0.10.2), and the convolution runs
several times slower. The backward pass of an HWIO convolution is a convolution with an HWOI
kernel (JAX's transpose rule swaps the kernel's feature axes), so every gradient step of a
convolutional network inside a scan hit the slow path: 20-40x slower convolutions at digits-CNN
sizes in our benchmarks (JAX issue #12868 reports the same for NCW inputs).

:func:`fast_convolutions` re-runs a function's jaxpr with every convolution written in the fast
layout: explicit transposes of its operands, a convolution with NHWC / HWIO / NHWC dimension
numbers, and a transpose of the result back. The arithmetic is the same; only the layout
changes.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from jax import lax
from jax.extend import core

# Call primitives whose body is re-run inline (their semantics are "run this jaxpr").
_CALLS = frozenset({"jit", "pjit", "closed_call", "core_call"})


def _fast_dims(n: int) -> lax.ConvDimensionNumbers:
    """NHWC / HWIO / NHWC for ``n``-dimensional operands (any number of spatial axes)."""
    spatial = tuple(range(1, n - 1))
    return lax.ConvDimensionNumbers((0, n - 1, *spatial), (n - 1, n - 2, *range(n - 2)),
                                    (0, n - 1, *spatial))


def _convolution(eqn, lhs: jax.Array, rhs: jax.Array) -> jax.Array:
    params = dict(eqn.params)
    dims = params["dimension_numbers"]
    n = len(dims.lhs_spec)
    fast = _fast_dims(n)
    if dims == fast:
        return eqn.primitive.bind(lhs, rhs, **params)
    # Each spec lists (batch or out-feature, feature or in-feature, *spatial) axis positions.
    lhs_t = lax.transpose(lhs, (dims.lhs_spec[0], *dims.lhs_spec[2:], dims.lhs_spec[1]))
    rhs_t = lax.transpose(rhs, (*dims.rhs_spec[2:], dims.rhs_spec[1], dims.rhs_spec[0]))
    y = eqn.primitive.bind(lhs_t, rhs_t, **dict(params, dimension_numbers=fast))
    out = dims.out_spec
    where = {out[0]: 0, out[1]: n - 1, **{a: 1 + i for i, a in enumerate(out[2:])}}
    return lax.transpose(y, tuple(where[axis] for axis in range(n)))


def _bind(eqn, args: list) -> list:
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns = ()
    if isinstance(params, tuple):  # older JAX: (subfuns, params)
        subfuns, params = params
    out = eqn.primitive.bind(*subfuns, *args, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _run(jaxpr, consts, args) -> list:
    env = dict(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))

    def read(v):
        return v.val if isinstance(v, core.Literal) else env[v]

    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            outs = [_convolution(eqn, *ins)]
        elif name in _CALLS:
            closed = eqn.params["jaxpr"]
            outs = _run(closed.jaxpr, closed.consts, ins)
        else:  # loops, conds and custom rules keep their bodies as they are
            outs = _bind(eqn, ins)
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def fast_convolutions(fn: Callable) -> Callable:
    """``fn`` (same values, same pytrees) with every convolution in the NHWC / HWIO layout,
    including those of its derivatives when ``fn`` computes them; a no-op off CPU, where the
    compiler chooses convolution layouts itself."""
    if jax.default_backend() != "cpu":
        return fn

    def wrapped(*args):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        outs = _run(closed.jaxpr, closed.consts, jax.tree.leaves(args))
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return wrapped
