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
changes, and only when the default backend is the CPU (``_reinterpret.on_cpu``): on other
platforms ``fn`` runs as it is.
A convolution with few positions or a 1x1 kernel (:mod:`jaxplain.core._patches`) becomes a
patch product instead, in loops and, through :data:`REWRITES`, before differentiating anywhere.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxplain.core._patches import patch_product, use_patch_product
from jaxplain.core._reinterpret import on_cpu


def _spatial(eqn, lhs, rhs) -> tuple[tuple, tuple]:
    """The spatial sizes of the input and the kernel, in the order of the dimension numbers."""
    dn = eqn.params["dimension_numbers"]
    return (tuple(lhs.shape[a] for a in dn.lhs_spec[2:]),
            tuple(rhs.shape[a] for a in dn.rhs_spec[2:]))


def _rewritten(eqn, lhs, rhs, patches: bool):
    """``eqn`` (a ``conv_general_dilated``) with its operands and result in the fast layout,
    computed as a patch product when `patches`; None when it is a convolution in that layout
    already."""
    params = dict(eqn.params)
    dn = params["dimension_numbers"]
    n = len(dn.rhs_spec)
    act = (0, n - 1, *range(1, n - 1))       # (batch, feature, *spatial) axes of NHWC
    kernel = (n - 1, n - 2, *range(n - 2))   # (out, in, *spatial) axes of HWIO
    if not patches and (dn.lhs_spec, dn.rhs_spec, dn.out_spec) == (act, kernel, act):
        return None
    if dn.lhs_spec != act:
        lhs = jnp.transpose(lhs, (dn.lhs_spec[0], *dn.lhs_spec[2:], dn.lhs_spec[1]))
    if dn.rhs_spec != kernel:
        rhs = jnp.transpose(rhs, (*dn.rhs_spec[2:], dn.rhs_spec[1], dn.rhs_spec[0]))
    params["dimension_numbers"] = jax.lax.ConvDimensionNumbers(act, kernel, act)
    out = patch_product(lhs, rhs, params) if patches else eqn.primitive.bind(lhs, rhs, **params)
    if dn.out_spec != act:
        source = (dn.out_spec[0], *dn.out_spec[2:], dn.out_spec[1])  # where each axis belongs
        out = jnp.transpose(out, [source.index(a) for a in range(n)])
    return [out]


def _conv(eqn, lhs, rhs):
    """A convolution of a loop body: in the fast layout, or a patch product if it has few
    positions or a 1x1 kernel."""
    return _rewritten(eqn, lhs, rhs, use_patch_product(*_spatial(eqn, lhs, rhs), eqn.params))


def _patch_conv(eqn, lhs, rhs):
    """A convolution with few positions or a 1x1 kernel as a patch product; others are left as
    they are."""
    if not use_patch_product(*_spatial(eqn, lhs, rhs), eqn.params):
        return None
    return _rewritten(eqn, lhs, rhs, patches=True)


#: The rewrite that is worth making anywhere, also outside loops (see :mod:`._patches`).
REWRITES = {"conv_general_dilated": _patch_conv}


def fast_convolutions(fn: Callable) -> Callable:
    """``fn`` with every convolution (including those of its gradients) in the fast layout on CPU.

    Values are unchanged (the operands are only transposed; a convolution with few positions or
    a 1x1 kernel is computed as a patch product, equal up to rounding); on other platforms ``fn``
    runs as it is (:func:`jaxplain.core._reinterpret.on_cpu`). Meant for the body of a loop, where XLA:CPU
    does not make this rewrite itself.
    """
    return on_cpu(fn, {"conv_general_dilated": _conv})
