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
import jax.numpy as jnp

from jaxplain.core._reinterpret import on_cpu


def _conv(eqn, lhs, rhs):
    """``eqn`` (a ``conv_general_dilated``) with its operands and result in the fast layout, or
    None when it is in that layout already."""
    params = dict(eqn.params)
    dn = params["dimension_numbers"]
    n = len(dn.rhs_spec)
    act = (0, n - 1, *range(1, n - 1))       # (batch, feature, *spatial) axes of NHWC
    kernel = (n - 1, n - 2, *range(n - 2))   # (out, in, *spatial) axes of HWIO
    if (dn.lhs_spec, dn.rhs_spec, dn.out_spec) == (act, kernel, act):
        return None
    if dn.lhs_spec != act:
        lhs = jnp.transpose(lhs, (dn.lhs_spec[0], *dn.lhs_spec[2:], dn.lhs_spec[1]))
    if dn.rhs_spec != kernel:
        rhs = jnp.transpose(rhs, (*dn.rhs_spec[2:], dn.rhs_spec[1], dn.rhs_spec[0]))
    params["dimension_numbers"] = jax.lax.ConvDimensionNumbers(act, kernel, act)
    out = eqn.primitive.bind(lhs, rhs, **params)
    if dn.out_spec != act:
        source = (dn.out_spec[0], *dn.out_spec[2:], dn.out_spec[1])  # where each axis belongs
        out = jnp.transpose(out, [source.index(a) for a in range(n)])
    return [out]


def fast_convolutions(fn: Callable) -> Callable:
    """``fn`` with every convolution (including those of its gradients) in the fast layout on CPU.

    Values are unchanged (the operands are only transposed); on other platforms ``fn`` runs as
    it is (``jax.lax.platform_dependent``). Meant for the body of a loop, where XLA:CPU does not
    make this rewrite itself.
    """
    return on_cpu(fn, {"conv_general_dilated": _conv})
