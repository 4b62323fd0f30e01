"""Occlusion and feature ablation: the output drop when parts of the input are replaced."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.attribution import _common
from jaxplain.core._channels import image_channel_axis


def _per_axis(value, name: str, example: tuple, fill: Sequence[int],
              channels: int | None = None) -> tuple[int, ...]:
    """An int for every axis, or a tuple of ints per axis of an example: a full-rank tuple as
    given; a shorter one for the leading axes but `channels` (an image's channel axis, None:
    not known), with `fill` on the axes not given (and on `channels`)."""
    try:
        values = ((value,) * len(example) if isinstance(value, (int, np.integer))
                  else tuple(value))
    except TypeError:  # a float, None: not a sequence
        values = (value,)
    if len(values) > len(example) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in values):
        raise ValueError(f"{name} must be a positive int or a tuple of at most {len(example)} "
                         f"positive ints (one per axis of an example {example}); got {value!r}")
    out = list(fill)
    axes = [a for a in range(len(example)) if a != channels or len(values) == len(example)]
    for axis, v in zip(axes, values):
        out[axis] = int(v)
    return tuple(int(v) for v in out)


def _channel_axis(f: Callable, x: jax.Array, *options) -> int | None:
    """The channel axis of one example of `x` (0 for NCHW images, 2 for NHWC), read off the
    model's first convolution as the other image methods do; None when it has none, or when
    every option is an int or a full-rank tuple (no axis is left to cover whole)."""
    rank = x.ndim - 1
    if rank < 2 or all(isinstance(o, (int, np.integer)) or len(tuple(o)) >= rank
                       for o in options):
        return None
    axis = image_channel_axis(f, x)
    return None if axis is None or axis < 1 else axis - 1


def _warn_leading(window, stride, win: tuple, example: tuple) -> None:
    """Warn when a `window` or `stride` shorter than an example's rank sizes the leading axes
    of an example of 3 axes or more (an image) because the model has no convolution to read
    the channel axis from: on NCHW images a spatial ``(h, w)`` then sizes ``(C, H)``. An
    example that looks channels-last (a last axis of at most 4, a first one longer: NHWC,
    where the leading axes are the spatial ones) is not warned about."""
    short = [o for o in (window, stride)
             if not isinstance(o, (int, np.integer)) and len(tuple(o)) < len(example)]
    if len(example) < 3 or not short or example[-1] <= 4 < example[0]:
        return
    warnings.warn(
        f"occlusion got window={window!r}, stride={stride!r}, shorter than an example's shape "
        f"{example}, and found no convolution in f to read the channel axis from: the tuple "
        f"sizes the leading axes (window per axis: {win}), so on NCHW images a spatial (h, w) "
        "sizes (C, H) and covers W whole. Pass one size per axis to say which axes the window "
        "covers, e.g. (C, h, w) on NCHW or (h, w, C) on NHWC.", UserWarning, stacklevel=3)


def windows(example: tuple, window: tuple, stride: tuple) -> np.ndarray:
    """Start offsets of Captum's occlusion windows, shape ``(n_windows, len(example))``.

    Per axis the starts are ``0, s, 2s, ...``; there are ``ceil((D - w) / s) + 1`` of them and
    the last window is cut off at the border.
    """
    counts = [math.ceil((d - w) / s) + 1 for d, w, s in zip(example, window, stride)]
    grids = np.meshgrid(*[np.arange(c) * s for c, s in zip(counts, stride)], indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1).astype(np.int32)


def _coverage(example: tuple, window: tuple, starts: np.ndarray) -> np.ndarray:
    counts = np.ones(example, np.float64)
    for axis, (d, w) in enumerate(zip(example, window)):
        per_axis = np.zeros(d)
        for s in np.unique(starts[:, axis]):
            per_axis[s:s + w] += 1
        shape = [1] * len(example)
        shape[axis] = d
        counts = counts * per_axis.reshape(shape)
    return counts


def _window_mask(start, example: tuple, window: tuple):
    mask = jnp.ones(example, bool)
    for axis, (d, w) in enumerate(zip(example, window)):
        idx = jax.lax.broadcasted_iota(jnp.int32, example, axis)
        mask = mask & (idx >= start[axis]) & (idx < start[axis] + w)
    return mask


def _shown(value, per_axis: tuple) -> str:
    """`value` as the user passed it, with what it means per axis where that differs."""
    given = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    return repr(value) if given == per_axis else f"{value!r} (per axis: {per_axis})"


def _drop_sum(f, x, target, baseline, member, items, batch_size):
    """``sum_k drop_k * member(items[k])``, where ``drop_k = f(x)_t - f(x')_t`` and ``x'`` is
    `x` with the positions of ``member(items[k])`` (a bool array of one example's shape, or of
    `x`'s: one per example) set to the baseline. The drops and their sum are taken in float32
    at least (:func:`~._common.wide` of the model's output dtype).

    Each chunk of ``c`` items is one batch of ``n * c`` inputs folded example-major
    (:func:`jaxplain.attribution._common.fold`), so a batch sharded over devices stays
    sharded; a model that takes only `x`'s batch has `f` vmapped over the items instead.
    """
    n, example = x.shape[0], x.shape[1:]
    reference = _common.widen(_common.selected(f, x, target))
    chunk = min(batch_size or len(items), len(items))
    if not _common.takes_batch(f, x, n * chunk) or (
            len(items) % chunk and not _common.takes_batch(f, x, n * (len(items) % chunk))):
        def one(item):
            where = member(item)
            where = where if where.ndim == x.ndim else where[None]
            drop = reference - _common.widen(
                _common.selected(f, jnp.where(where, baseline, x), target))
            return drop.reshape((-1,) + (1,) * len(example)) * where.astype(drop.dtype)

        return _common.chunked_sum(one, items, batch_size)

    def folded(chunk_items):
        c = chunk_items.shape[0]
        where = jax.vmap(member)(chunk_items)  # (c, *example) or (c, n, *example)
        shared = where.ndim == x.ndim
        per_example = where[None] if shared else jnp.moveaxis(where, 0, 1)  # (1 or n, c, ...)
        z = jnp.where(per_example, baseline[:, None], x[:, None])
        out = _common.widen(_common.selected(f, _common.fold(z), jnp.repeat(target, c)))
        out = out.reshape(n, c)
        drops = reference[:, None] - out
        if shared:  # one product over the items: (n, c) x (c, features)
            flat = where.reshape(c, -1).astype(drops.dtype)
            return jnp.dot(drops, flat, precision=jax.lax.Precision.HIGHEST).reshape(x.shape)
        return _common.sum_second(drops.reshape((n, c) + (1,) * len(example))
                                  * per_example.astype(drops.dtype))

    return _common.chunked_reduce(folded, items, batch_size)


@functools.partial(jax.jit, static_argnames=("f", "window", "batch_size"))
def _occlusion(f, x, target, baseline, starts, counts, *, window, batch_size):
    example = x.shape[1:]
    member = lambda start: _window_mask(start, example, window)  # noqa: E731
    total = _drop_sum(f, x, target, baseline, member, starts, batch_size)
    return (total / counts[None]).astype(_common.result_dtype(x.dtype))


def occlusion(f: Callable, x: Float[ArrayLike, "batch *feature"] | Int[ArrayLike, "batch *feature"],
              target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""],
              *, window, stride=1, baseline: ArrayLike | None = 0.0,
              batch_size: int | None = None) -> Float[Array, "batch *feature"]:
    """Occlusion: slide a window over the input, replace it by the baseline, record the drop.

    Each position gets the mean, over the windows covering it, of
    ``f(x)_t - f(x with the window set to the baseline)_t`` (Captum's ``Occlusion``).

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``.
      x: the inputs, batch first (images NHWC, or NCHW for a model whose first convolution
        reads its channels on axis 1); or integer codes (categories) of a model of them.
      target: the class to explain per example, shape ``(n,)``, or one int.
      window: the window size per axis of an example, or one int for every axis. A tuple with
        one size per axis is taken as given; a shorter one, e.g. a spatial ``(h, w)`` on images,
        sizes the axes other than the channel axis in order (``(h, w, C)`` on NHWC,
        ``(C, h, w)`` on NCHW: the channel axis is read off the model's first convolution, as
        Grad-CAM does), and the channel axis and any axes not given are covered whole. Without
        a convolution a shorter tuple sizes the leading axes.
      stride: the step per axis (an int or a tuple like `window`, placed the same way); must
        not exceed the window where the window is smaller than the axis. Axes not given step
        by 1.
      baseline: the replacement value: a scalar or an array broadcastable to `x` (whole
        numbers for integer `x`); for a background of reference inputs, see
        :func:`kernel_shap`.
      batch_size: the number of windows evaluated at once (None: all at once on GPU/TPU, on CPU as
        many as keep a pass in cache).

    Returns:
      An array shaped like `x`, in its dtype (float32 for integer codes; the drops are
      averaged in float32 at least).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxplain.attribution import occlusion
      >>> f = lambda x: x.sum(axis=1, keepdims=True)
      >>> occlusion(f, jnp.array([[1.0, 2.0, 3.0]]), 0, window=(2,))
      Array([[3., 4., 5.]], dtype=float32)

    References:
      Zeiler, Fergus. Visualizing and Understanding Convolutional Networks. ECCV 2014.
    """
    x, t = _common.check_evaluating_arguments(f, x, target)
    b = _common.check_baseline(baseline, x, method="occlusion")
    example = tuple(x.shape[1:])
    _per_axis(window, "window", example, example)  # bad values: an error before tracing f
    _per_axis(stride, "stride", example, example)
    channels = _channel_axis(f, x, window, stride)
    win = _per_axis(window, "window", example, example, channels)
    if channels is None:
        _warn_leading(window, stride, win, example)
    step = _per_axis(stride, "stride", example, (1,) * len(example), channels)
    for axis, (d, w, s) in enumerate(zip(example, win, step)):
        if w > d:
            raise ValueError(f"window {_shown(window, win)} exceeds the example shape {example} "
                             f"on axis {axis}")
        if s > w and w < d:
            raise ValueError(f"stride {_shown(stride, step)} exceeds window {_shown(window, win)} "
                             f"on axis {axis}: some positions would never be occluded")
    starts = windows(example, win, step)
    counts = _coverage(example, win, starts)
    counts = jnp.asarray(counts, _common.wide(x.dtype))
    return _occlusion(f, x, t, b, jnp.asarray(starts), counts, window=win,
                      batch_size=_common.check_batch_size(batch_size))


@functools.partial(jax.jit, static_argnames=("f", "groups", "batch_size"))
def _feature_ablation(f, x, target, baseline, mask, *, groups, batch_size):
    groups = jnp.arange(groups, dtype=jnp.int32)
    drops = _drop_sum(f, x, target, baseline, lambda group: mask == group, groups, batch_size)
    return drops.astype(_common.result_dtype(x.dtype))


def feature_ablation(f: Callable,
                     x: Float[ArrayLike, "batch *feature"] | Int[ArrayLike, "batch *feature"],
                     target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *, feature_mask=None,
                     baseline: ArrayLike | None = 0.0,
                     batch_size: int | None = None) -> Float[Array, "batch *feature"]:
    """Feature ablation: replace one feature group at a time by the baseline, record the drop.

    Every member of a group gets ``f(x)_t - f(x with the group set to the baseline)_t``, not
    divided by the group size (Captum's ``FeatureAblation``).

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``.
      x: the inputs, batch first; or integer codes (categories) of a model of them.
      target: the class to explain per example, shape ``(n,)``, or one int.
      feature_mask: integer group ids with one example's shape (or broadcastable to it, e.g.
        ``(8, 8, 1)`` superpixels shared by the channels of NHWC images, ``(1, 8, 8)`` for
        NCHW ones), shared by the batch; or one mask per example, with `x`'s number of axes
        (batch axis n or 1; ids over the whole mask, as Captum reads it). None: every element
        is its own group. Must be concrete (not traced).
      baseline: the replacement value: a scalar or an array broadcastable to `x` (whole
        numbers for integer `x`); for a background of reference inputs, see
        :func:`kernel_shap`.
      batch_size: the number of groups evaluated at once (None: all at once on GPU/TPU, on CPU as
        many as keep a pass in cache).

    Returns:
      An array shaped like `x`, in its dtype (float32 for integer codes; the drops are taken
      in float32 at least).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxplain.attribution import feature_ablation
      >>> f = lambda x: (x[:, :1] * x[:, 1:2]) + x[:, 2:]
      >>> feature_ablation(f, jnp.array([[2.0, 3.0, 1.0]]), 0, feature_mask=jnp.array([0, 0, 1]))
      Array([[6., 6., 1.]], dtype=float32)

    References:
      Zeiler, Fergus. Visualizing and Understanding Convolutional Networks. ECCV 2014;
      Kokhlikyan et al. Captum: A unified and generic model interpretability library for
      PyTorch. arXiv:2009.07896, 2020.
    """
    x, t = _common.check_evaluating_arguments(f, x, target)
    b = _common.check_baseline(baseline, x, method="feature_ablation")
    mask, groups = _common.group_mask(feature_mask, x)
    return _feature_ablation(f, x, t, b, mask, groups=groups,
                             batch_size=_common.check_batch_size(batch_size))
