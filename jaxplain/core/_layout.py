"""Convolutions in XLA:CPU's fast layout, so that loop bodies with convolutions run fast.

XLA:CPU runs a convolution with its fast (Eigen) kernel only when the input and output are
``(batch, *spatial, feature)`` and the kernel ``(*spatial, in, out)``. Outside a loop it
transposes other layouts into that one by itself; inside the body of a ``lax.scan`` or
``while_loop`` it does not (observed with jax 0.10.2: XLA's convolution canonicalization walks
only the entry computation). The backward pass of an ordinary NHWC / HWIO convolution is a
convolution whose kernel has its ``in`` and ``out`` axes swapped, so every gradient step of a
convolutional network inside a scan fell to a generic loop nest: 4-40x slower at digits-CNN
sizes in our benchmarks (feature visualization's render loop, NeuroChains' optimization).

:func:`fast_convolutions` re-runs a function's jaxpr with every convolution written in the fast
layout: explicit transposes of its operands, a convolution with NHWC / HWIO / NHWC dimension
numbers, and a transpose of the result back. The arithmetic is the same; only the layout
changes, and only on CPU (``jax.lax.platform_dependent``): other platforms run ``fn`` as it is.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.extend
import jax.numpy as jnp

# Call primitives whose body is evaluated inline (their meaning is "run this jaxpr").
_INLINE = frozenset({"jit", "pjit", "closed_call", "core_call", "remat2", "checkpoint"})


def _conv(eqn, lhs, rhs):
    """``eqn`` (a ``conv_general_dilated``) with its operands and result in the fast layout."""
    params = dict(eqn.params)
    dn = params["dimension_numbers"]
    n = len(dn.rhs_spec)
    act = (0, n - 1, *range(1, n - 1))       # (batch, feature, *spatial) axes of NHWC
    kernel = (n - 1, n - 2, *range(n - 2))   # (out, in, *spatial) axes of HWIO
    if (dn.lhs_spec, dn.rhs_spec, dn.out_spec) == (act, kernel, act):
        return eqn.primitive.bind(lhs, rhs, **params)
    if dn.lhs_spec != act:
        lhs = jnp.transpose(lhs, (dn.lhs_spec[0], *dn.lhs_spec[2:], dn.lhs_spec[1]))
    if dn.rhs_spec != kernel:
        rhs = jnp.transpose(rhs, (*dn.rhs_spec[2:], dn.rhs_spec[1], dn.rhs_spec[0]))
    params["dimension_numbers"] = jax.lax.ConvDimensionNumbers(act, kernel, act)
    out = eqn.primitive.bind(lhs, rhs, **params)
    if dn.out_spec != act:
        source = (dn.out_spec[0], *dn.out_spec[2:], dn.out_spec[1])  # where each axis belongs
        out = jnp.transpose(out, [source.index(a) for a in range(n)])
    return out


def _eval(jaxpr, consts, args) -> list:
    env = {}

    def read(v):
        return v.val if isinstance(v, jax.extend.core.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            outs = [_conv(eqn, *ins)]
        elif name in _INLINE:
            inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
            if isinstance(inner, jax.extend.core.ClosedJaxpr):
                outs = _eval(inner.jaxpr, inner.consts, ins)
            else:
                outs = _eval(inner, (), ins)
        else:
            params = eqn.primitive.get_bind_params(eqn.params)
            subfuns = ()
            if isinstance(params, tuple):  # older JAX: (subfuns, params)
                subfuns, params = params
            out = eqn.primitive.bind(*subfuns, *ins, **params)
            outs = out if eqn.primitive.multiple_results else [out]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def _rewritten(fn: Callable, *args):
    flat, tree = jax.tree_util.tree_flatten(args)
    closed, shapes = jax.make_jaxpr(lambda *a: fn(*jax.tree_util.tree_unflatten(tree, a)),
                                    return_shape=True)(*flat)
    outs = _eval(closed.jaxpr, closed.consts, flat)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shapes), outs)


def fast_convolutions(fn: Callable) -> Callable:
    """``fn`` with every convolution (including those of its gradients) in the fast layout on CPU.

    Values are unchanged (the operands are only transposed); on other platforms ``fn`` runs as
    it is (``jax.lax.platform_dependent``). Meant for the body of a loop, where XLA:CPU does not
    make this rewrite itself.
    """

    def wrapped(*args):
        return jax.lax.platform_dependent(*args, cpu=lambda *a: _rewritten(fn, *a), default=fn)

    return wrapped
