"""Convolutions with few positions, and 1x1 convolutions, as one patch-matrix product, which
XLA:CPU runs fast.

XLA:CPU is slow on convolutions whose output or input has very few spatial positions. One
example is a 3x3 convolution on a 2x2 map, which is the last stage of a ResNet-50 on 32-64 px
images. Measured with jax 0.10.2 on 2 cores, batch 20, 512 channels: 191 ms, against 2.5 ms
for PyTorch and 3.9 ms for the same product written as patches. At 3x3 maps and larger XLA's
own convolution is as fast or faster, except for a kernel of one position (1x1): that is a plain
matrix product, and XLA:CPU's ``dot`` runs it up to 2x faster than its convolution (ResNet-50's
1x1 layers at batch 80: 64->256 channels on 16x16 maps 8.2 ms against 5.1 ms, input gradient
22.5 against 11.1 ms; at batch 1 the two are within 10%).

:func:`patch_product` writes such a convolution as a matrix product. Each kernel offset gives
one strided slice of the padded (and dilated) input; the slices are stacked into a
``(batch * positions, kernel positions * in)`` matrix, which is multiplied by the kernel
reshaped to ``(kernel positions * in, out)``. The values are those of the convolution up to
float rounding. :func:`use_patch_product` says when to use it.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp

#: A convolution with at most this many output (or input) positions is a patch product.
MAX_POSITIONS = 4


def _out_sizes(lhs_spatial, rhs_spatial, params) -> list[int]:
    sizes = []
    for n, k, (lo, hi), s, ld, rd in zip(lhs_spatial, rhs_spatial, params["padding"],
                                         params["window_strides"], params["lhs_dilation"],
                                         params["rhs_dilation"]):
        dilated = (n - 1) * ld + 1 + lo + hi
        sizes.append((dilated - (k - 1) * rd - 1) // s + 1)
    return sizes


def use_patch_product(lhs_spatial, rhs_spatial, params) -> bool:
    """Whether a ``conv_general_dilated`` is better computed by :func:`patch_product` on CPU: no
    feature or batch groups, a non-empty output, and either a kernel of one position or at most
    :data:`MAX_POSITIONS` output or input positions (spatial sizes as tuples)."""
    if params["feature_group_count"] != 1 or params["batch_group_count"] != 1:
        return False
    out = _out_sizes(lhs_spatial, rhs_spatial, params)
    if min(out, default=1) < 1:
        return False
    return (math.prod(rhs_spatial) == 1
            or min(math.prod(out), math.prod(lhs_spatial)) <= MAX_POSITIONS)


def window_slices(x: jax.Array, window, strides, dilation) -> list[jax.Array]:
    """One strided slice of the (already padded) `x` per offset of a `window` with `strides`
    and window `dilation` (all per axis of `x`), in row-major order of the offsets; each slice
    has the shape of the windowed output."""
    out = [(n - (k - 1) * d - 1) // s + 1
           for n, k, s, d in zip(x.shape, window, strides, dilation)]
    slices = []
    for offset in itertools.product(*map(range, window)):
        start = [o * d for o, d in zip(offset, dilation)]
        stop = [b + (m - 1) * s + 1 for b, m, s in zip(start, out, strides)]
        slices.append(jax.lax.slice(x, start, stop, strides))
    return slices


def patch_product(lhs: jax.Array, rhs: jax.Array, params: dict) -> jax.Array:
    """The convolution of ``lhs`` ``(batch, *spatial, in)`` with ``rhs`` ``(*kernel, in, out)``
    under ``params`` (a ``conv_general_dilated``'s strides, padding and dilations; one feature
    group), as one matrix product of patches; returns ``(batch, *out_spatial, out)``."""
    n = lhs.ndim - 2
    pads = [(0, 0, 0), *((lo, hi, d - 1) for (lo, hi), d in
                         zip(params["padding"], params["lhs_dilation"])), (0, 0, 0)]
    x = jax.lax.pad(lhs, jnp.zeros((), lhs.dtype), pads)
    kernel = rhs.shape[:n]
    slices = window_slices(x, (1, *kernel, 1), (1, *params["window_strides"], 1),
                           (1, *params["rhs_dilation"], 1))
    patches = jnp.stack(slices, axis=-2).reshape(-1, math.prod(kernel) * lhs.shape[-1])
    y = jax.lax.dot_general(patches, rhs.reshape(-1, rhs.shape[-1]), (((1,), (0,)), ((), ())),
                            precision=params.get("precision"),
                            preferred_element_type=params.get("preferred_element_type"))
    return y.reshape(*slices[0].shape[:-1], rhs.shape[-1])
