"""Max and sum pools in forms whose gradients run fast on XLA:CPU.

A max or sum pool whose windows tile its input (stride equal to the window, no padding, no
dilation) is a reduction over blocks: reshape each window into a trailing axis and reduce it.
XLA:CPU differentiates the ``reduce_window`` form slowly: the gradient of a max pool is a
``select_and_scatter`` and that of a sum pool a padded window sum, which together took 32-44 %
of a gradient step of a small CNN in our benchmark (``experiments/bench/attribution.py``,
batch 32 to 1600; jax 0.10.2). The block form's gradients are a broadcast and a one-hot select.

A max pool whose windows overlap or pad (ResNet's 3x3, stride 2, padding 1) cannot be reshaped
into blocks; its ``select_and_scatter`` gradient is slower still: 36 ms for 8 maps of 48x48x64
on 2 cores, against 4.4 ms in PyTorch. :func:`window_max` keeps XLA's forward pass and
differentiates through one strided slice per window offset instead: the first slice that
reaches the maximum takes the tangent, and the reverse pass is a sum of padded one-hot
selections (7.1 ms there).

:data:`REWRITES` (applied by :func:`jaxplain.core.cpu_friendly`) re-run a function's jaxpr
with every tiling ``reduce_window_max`` and ``reduce_window_sum`` written as a block reduction
and every other floating-point max pool as :func:`window_max`. The values are the same, and so
are the gradients: a max pool's gradient goes to the first maximum of each window in row-major
order, as XLA's ``select_and_scatter`` and PyTorch's max pool do (``jnp.max`` would split it
among ties). Sum pools that overlap, pad or dilate are left as they are, and so are max pools
over a dilated input; so is everything off CPU.

:func:`first_max` is the ``reduce_max`` spelling of a max pool (``h.max(axis=1)``, a global max
pool) with the same gradient: rewrite_backward runs such a pool through it on every platform, so
a tied maximum (a constant reference's) goes where the ``reduce_window`` spelling sends it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.core._patches import window_slices


def _blocks(x: jax.Array, window: tuple) -> jax.Array:
    """``(*s)`` with ``s[d] = n[d] * window[d]`` -> ``(*n, prod(window))``, one window a row."""
    split = [size for s, k in zip(x.shape, window) for size in (s // k, k)]
    nd = x.ndim
    y = x.reshape(split).transpose([*range(0, 2 * nd, 2), *range(1, 2 * nd, 2)])
    return y.reshape(y.shape[:nd] + (-1,))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def block_max(x: jax.Array, window: tuple) -> jax.Array:
    """The max over each tiling window of `x`: ``(*(n * window))`` -> ``(*n)``."""
    return _blocks(x, window).max(-1)


@block_max.defjvp
def _block_max_jvp(window, primals, tangents):
    rows = _blocks(primals[0], window)
    first = jax.nn.one_hot(rows.argmax(-1), rows.shape[-1], dtype=bool)  # first maximum
    # Linear in the tangent, so reverse mode transposes it into a one-hot scatter.
    tangent = jnp.where(first, _blocks(tangents[0], window), 0).sum(-1)
    return rows.max(-1), tangent


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def first_max(x: jax.Array, axes: tuple) -> jax.Array:
    """``x.max(axis=axes)`` whose derivative goes to the first maximum over `axes` in row-major
    order, as a ``reduce_window`` max pool's does (``jnp.max``'s is split among ties)."""
    return x.max(axis=axes)


@first_max.defjvp
def _first_max_jvp(axes, primals, tangents):
    def rows(a):  # the reduced axes last, flattened: (*kept, prod(reduced))
        a = jnp.moveaxis(a, axes, range(a.ndim - len(axes), a.ndim))
        return a.reshape(a.shape[:a.ndim - len(axes)] + (-1,))

    values = rows(primals[0])
    first = jax.nn.one_hot(values.argmax(-1), values.shape[-1], dtype=bool)
    # Linear in the tangent, so reverse mode transposes it into a one-hot scatter.
    return values.max(-1), jnp.where(first, rows(tangents[0]), 0).sum(-1)


def _padded_slices(x: jax.Array, window: tuple, strides: tuple, padding: tuple,
                   dilation: tuple, fill: float) -> list[jax.Array]:
    """:func:`window_slices` of `x` padded with `fill`: one per window offset, each shaped like
    the pool's output."""
    x = jax.lax.pad(x, jnp.asarray(fill, x.dtype), [(lo, hi, 0) for lo, hi in padding])
    return window_slices(x, window, strides, dilation)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3, 4))
def window_max(x: jax.Array, window: tuple, strides: tuple, padding: tuple,
               dilation: tuple) -> jax.Array:
    """XLA's max pool of `x` (any rank; windows, strides, ``(low, high)`` paddings and window
    dilations per axis, padding with ``-inf``), with derivatives through strided slices."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, padding,
                                 window_dilation=dilation)


@window_max.defjvp
def _window_max_jvp(window, strides, padding, dilation, primals, tangents):
    y = window_max(primals[0], window, strides, padding, dilation)
    values = _padded_slices(primals[0], window, strides, padding, dilation, -jnp.inf)
    taken = jnp.zeros(y.shape, bool)
    tangent = jnp.zeros(y.shape, tangents[0].dtype)
    # Linear in the tangent, so reverse mode transposes it into padded one-hot selections.
    for v, t in zip(values, _padded_slices(tangents[0], window, strides, padding, dilation, 0)):
        first = (v == y) & ~taken  # the first offset that reaches the maximum
        taken = taken | first
        tangent = tangent + jnp.where(first, t, 0)
    return y, tangent


def _tiling(eqn, x) -> tuple | None:
    """The window of a ``reduce_window_*`` equation that tiles `x` (after trimming the
    remainder a VALID window drops), or None."""
    p = eqn.params
    window, strides = tuple(p["window_dimensions"]), tuple(p["window_strides"])
    if window != strides or any(tuple(pad) != (0, 0) for pad in p["padding"]):
        return None
    if any(d != 1 for d in (*p["base_dilation"], *p["window_dilation"])):
        return None
    if not jnp.issubdtype(x.dtype, jnp.floating) or np.prod(window) == 1:
        return None
    return window


def _trimmed(x: jax.Array, window: tuple) -> jax.Array:
    return x[tuple(slice(0, s - s % k) for s, k in zip(x.shape, window))]


def _max_pool(eqn, x):
    window = _tiling(eqn, x)
    if window is not None:
        return [block_max(_trimmed(x, window), window)]
    p = eqn.params
    if any(d != 1 for d in p["base_dilation"]) or not jnp.issubdtype(x.dtype, jnp.floating):
        return None
    return [window_max(x, tuple(p["window_dimensions"]), tuple(p["window_strides"]),
                       tuple(map(tuple, p["padding"])), tuple(p["window_dilation"]))]


def _sum_pool(eqn, x):
    window = _tiling(eqn, x)
    return None if window is None else [_blocks(_trimmed(x, window), window).sum(-1)]


#: The rewrites, by primitive (for :func:`jaxplain.core._reinterpret.on_cpu`).
REWRITES = {"reduce_window_max": _max_pool, "reduce_window_sum": _sum_pool}
