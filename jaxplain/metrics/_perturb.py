"""The shared engine of the perturbation metrics: rank features, mask, evaluate in one batch.

A feature is what the metrics rank and replace as one. Where the model's first convolution
reads ``x`` with a channel axis (:func:`layout`), a feature is one position of the grid with all
its channels: a pixel of an image, a time step of a signal, a voxel of a volume; the channel
axis is moved last (:func:`channels_last`). Elsewhere every element is a feature, except that a
4-d batch fed to a model without any convolution keeps the NHWC convention (pixels). A
``feature_mask`` makes each group of elements one feature (:func:`feature_groups`,
:func:`group_ranks`).

Every example's features are ranked once; the images for all removal counts of all examples are
built with ``jnp.where`` from the rank array and evaluated by ``f`` in one vmapped call (or
chunks of ``batch_size`` images), so a deletion curve costs one forward pass over
``batch x (steps + 1)`` images and nothing per step in Python.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.attribution._common import chunked_map, group_mask
from jaxplain.attribution._value_checks import is_traced
from jaxplain.core._channels import ChannelsLast, WayBack, image_channel_axis, way_back
from jaxplain.core._program import trace
from jaxplain.core._outputs import as_probabilities
from jaxplain.core._user_line import user_stacklevel

BASELINES = ("zeros", "mean", "blur")
ORDERS = ("morf", "lerf")
OUTPUTS = ("probability", "logit")


@dataclasses.dataclass(frozen=True)
class Layout:
    """How the metrics read ``x``: ``axis`` holds channels that move together (None: every
    element is a feature); ``grid``: a convolution reads ``x``, so its feature axes form a
    grid that a blur may smooth."""

    axis: int | None
    grid: bool


def layout(f: Callable, x: jax.Array) -> Layout:
    """The :class:`Layout` of ``x`` for ``f``: the channel axis of its first convolution, traced
    back to ``x`` (:func:`jaxplain.core._channels.image_channel_axis`; cached per shape). A
    convolution that reads ``x`` through an added axis (``x[..., None]``) leaves ``x`` without
    channels; where the way back is lost on an axis of several elements, ``x`` is read element
    by element too, with a warning (:func:`_warn_lost`); a model with no convolution reads a 4-d
    batch as NHWC images and anything else element by element."""
    axis = image_channel_axis(f, x)
    if axis is not None:
        return Layout(axis, True)
    program = trace(f, jax.ShapeDtypeStruct(x.shape, x.dtype))
    if any(node.prim == "conv_general_dilated" for node in program.nodes):
        _warn_lost(way_back(program), x)
        return Layout(None, True)
    return Layout(3, True) if x.ndim == 4 else Layout(None, False)


def _warn_lost(way: WayBack, x: jax.Array) -> None:
    """Warn that every element of ``x`` is a feature of its own because the way back from the
    model's first convolution to ``x``'s channel axis is lost (:class:`WayBack`) or reaches
    several axes; silent where the model makes its channel axis itself (``x[..., None]``, a
    grey volume) or the axes reached have one element, where that is what the features are."""
    if len(way.axes) > 1 and any(x.shape[a] > 1 for a in way.axes):
        why = f"the ways back from the model's first convolution reach axes {sorted(way.axes)}"
    elif way.lost and not way.axes:
        why = f"the way back from the model's first convolution is lost at the op {way.lost[0]!r}"
    else:
        return
    warnings.warn(
        f"jaxplain.metrics: the channel axis of x {tuple(x.shape)} was not found ({why}), so "
        "every element of x is ranked and replaced as a feature of its own: a pixel's channels "
        'one by one, a "mean" baseline over all elements, insertion from zeros, no SSIM. To '
        "score whole pixels, pass the channel-summed map (a.sum(-1, keepdims=True) for channels "
        "last) with steps that divide the number of pixels and per-channel means as an array "
        "(baseline=x.mean((1, 2), keepdims=True) for NHWC images); or apply that preprocessing "
        "to x before the model.", UserWarning, stacklevel=user_stacklevel())


def is_image(x: jax.Array, channels: bool) -> bool:
    """Whether channels-last ``x`` is a batch of images ``(batch, H, W, C)``."""
    return channels and x.ndim == 4


def feature_shape(x_shape: tuple[int, ...], channels: bool) -> tuple[int, ...]:
    """One example's feature grid: all but the last (channel) axis, or all axes."""
    return tuple(x_shape[1:-1]) if channels else tuple(x_shape[1:])


def feature_scores(attribution: jax.Array, absolute: bool, channels: bool) -> jax.Array:
    """``(batch, n_features)`` relevance per feature (the last axis summed with ``channels``)."""
    a = attribution.sum(-1) if channels else attribution
    a = a.reshape(a.shape[0], -1)
    return jnp.abs(a) if absolute else a


def ranks(scores: jax.Array, order: str) -> jax.Array:
    """``(batch, n)`` position of each feature in the removal order (0 = removed first).

    ``"morf"`` removes the highest score first, ``"lerf"`` the lowest; ties go by feature index
    (a stable sort), so the order is deterministic.
    """
    keys = -scores if order == "morf" else scores
    perm = jnp.argsort(keys, axis=-1, stable=True)
    n = scores.shape[-1]
    pos = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), scores.shape)
    return jnp.zeros_like(pos).at[jnp.arange(scores.shape[0])[:, None], perm].set(pos)


def removal_ranks(attribution: jax.Array, labels: jax.Array | None, groups: int, order: str,
                  absolute: bool, channels: bool) -> jax.Array:
    """``(batch, n)`` removal positions: of the features (:func:`feature_scores`, :func:`ranks`),
    or with ``(batch, *example)`` group `labels` (:func:`feature_groups`) of every element, by
    its group's summed attribution (:func:`group_ranks`); then ``evaluate_counts`` takes
    ``channels=False``, as every element carries its own position."""
    if labels is None:
        return ranks(feature_scores(attribution, absolute, channels), order)
    n = attribution.shape[0]
    return group_ranks(attribution.reshape(n, -1), labels.reshape(n, -1),
                       jnp.full(n, groups, jnp.int32), groups, order, absolute)


def step_counts(n: int, steps: int) -> tuple[int, ...]:
    """Features removed after each of ``0..steps`` increments: ``floor(k n / steps)``."""
    return tuple(k * n // steps for k in range(steps + 1))


def fraction_counts(n: int, fractions: tuple[float, ...]) -> tuple[int, ...]:
    """Features removed for each fraction ``q``: ``int(q n)`` (the RoarTorch convention)."""
    return tuple(int(math.floor(q * n + 1e-9)) for q in fractions)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def blur(x: jax.Array, sigma: float, channels: bool) -> jax.Array:
    """Separable Gaussian blur along every feature axis (all but the batch axis and, with
    ``channels``, the last), per channel, edges extended (``mode="edge"``)."""
    k = jnp.asarray(_gaussian_kernel(sigma), x.dtype)
    r = (k.shape[0] - 1) // 2
    for axis in range(1, x.ndim - 1 if channels else x.ndim):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (r, r)
        xp = jnp.pad(x, pad, mode="edge")
        size = x.shape[axis]
        x = sum(k[i] * jax.lax.slice_in_dim(xp, i, i + size, axis=axis)
                for i in range(k.shape[0]))
    return x


def resolve_baseline(
    x: jax.Array, kind: str | None, value: jax.Array | None, blur_sigma: float, channels: bool
) -> jax.Array:
    """The replacement values, shaped like ``x`` (channels last with ``channels``).

    ``"zeros"``; ``"mean"``: each example's mean per channel, or over all its elements (a grid
    without channels; refused for other inputs by :func:`check_kind`);
    ``"blur"``: a Gaussian blur of each example (:func:`blur`); ``None``: ``value`` broadcast.
    """
    if kind is None:
        return jnp.broadcast_to(value, x.shape).astype(x.dtype)
    if kind == "zeros":
        return jnp.zeros_like(x)
    if kind == "mean":
        axes = tuple(range(1, x.ndim - 1 if channels else x.ndim))
        return jnp.broadcast_to(x.mean(axis=axes, keepdims=True), x.shape)
    return blur(x, blur_sigma, channels)


def channels_last(f, x: jax.Array, attribution: jax.Array, value: jax.Array | None,
                  axis: int | None):
    """``(f, x, attribution, value)`` with the channel axis `axis` of ``x`` (see
    :func:`layout`) moved last: the model as a function of channels-last inputs
    (:class:`jaxplain.core._channels.ChannelsLast`, equal for equal ``(f, axis)``, so that
    ``jit``'s caches hold) and the arrays moved, so that a feature is ranked and replaced with
    all its channels; as given when `axis` is None or already last."""
    if axis is None or axis == x.ndim - 1:
        return f, x, attribution, value
    if value is not None and value.ndim:
        value = jnp.moveaxis(jnp.broadcast_to(value, x.shape), axis, -1)
    return (ChannelsLast(f, axis), jnp.moveaxis(x, axis, -1), jnp.moveaxis(attribution, axis, -1),
            value)


def insertion_start(baseline: Any, image: bool) -> Any:
    """Where an insertion curve starts: `baseline`, or for ``None`` a blur of images (RISE's
    choice, see :func:`is_image`) and zeros for any other input."""
    if baseline is not None:
        return baseline
    return "blur" if image else "zeros"


def check_kind(kind: str | None, x: jax.Array, grid: bool) -> None:
    """Refuse ``baseline="blur"`` and ``"mean"`` for an input that no convolution reads
    (:class:`Layout`): along flat features or tokens a blur means nothing, and an example's
    mean over its features (income, age, a flag) is no value any of them takes."""
    if grid or kind not in ("blur", "mean"):
        return
    if kind == "blur":
        raise ValueError(
            f'baseline="blur" needs inputs that a convolution reads (images, signals, volumes) '
            f"or a 4-d image batch, got x of shape {x.shape} for a model without convolutions; "
            'use "zeros" or an array')
    raise ValueError(
        f'baseline="mean" averages an example over its channels or pixels, but x of shape '
        f"{x.shape} has neither (no convolution reads it), and a mean across unrelated features "
        "(tabular columns, embedding dimensions) means nothing. Pass a reference row as an "
        "array, e.g. baseline=x_train.mean(0), the mean training example (what `jaxplain "
        "explain` uses), or, for features on one scale, each example's own mean, "
        "baseline=x.mean(axis=tuple(range(1, x.ndim)), keepdims=True)")


def relabel(segments: Any, batch: int, grid: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(batch, *grid)`` labels ``0..S_i − 1`` per example (in order of the given labels) and
    ``(batch,)`` the number ``S_i`` of each example's segments, from a concrete int mask shaped
    ``grid`` (shared) or ``(batch, *grid)`` / ``(1, *grid)`` (one per example)."""
    if is_traced(segments):
        raise TypeError("segments must be a concrete array (their number decides the number of "
                        "evaluations); got a traced value. Pass it from outside jit.")
    if not hasattr(segments, "shape"):
        raise TypeError(f"segments must be an int array shaped {grid} or {(batch, *grid)}, got "
                        f"{type(segments).__name__}")
    s = np.asarray(segments)
    if not np.issubdtype(s.dtype, np.integer):
        raise TypeError(f"segments must hold integer segment ids, got dtype {s.dtype}")
    if s.shape == grid:
        s = s[None]
    if s.shape[1:] != grid or s.shape[0] not in (1, batch):
        raise ValueError(f"segments must have the shape of the grid of features {grid} "
                         f"(one mask for the batch) or {(batch, *grid)} (one per example), got "
                         f"{s.shape}")
    s = np.broadcast_to(s, (batch, *grid))
    labels, counts = np.empty(s.shape, np.int32), np.empty(batch, np.int32)
    for i, si in enumerate(s):
        ids, inverse = np.unique(si, return_inverse=True)
        labels[i], counts[i] = inverse.reshape(grid), ids.size
    return labels, counts


def feature_groups(feature_mask: Any, x: jax.Array, axis: int | None) -> tuple[np.ndarray, int]:
    """``(batch, *example)`` group labels ``0..G − 1`` per element, the channel axis `axis`
    moved last as :func:`channels_last` moves ``x``, and ``G``, from a `feature_mask` in the
    convention of :func:`jaxplain.attribution.feature_ablation` (one example's shape or
    broadcastable to it; or ``x``'s number of axes, one mask per example). Every example must
    have ``G`` groups, so that the steps of all curves remove the same fractions."""
    mask, _ = group_mask(feature_mask, x)
    labels, counts = relabel(np.broadcast_to(mask, x.shape), x.shape[0], tuple(x.shape[1:]))
    if counts.min() != counts.max():
        i, j = int(counts.argmin()), int(counts.argmax())
        raise ValueError(
            f"feature_mask must give every example the same number of groups (the curves' steps "
            f"count groups), got {counts[i]} for example {i} and {counts[j]} for example {j}; "
            "score examples with different groupings in separate calls, or use irof")
    if axis is not None and axis != x.ndim - 1:
        labels = np.moveaxis(labels, axis, -1)
    return np.ascontiguousarray(labels), int(counts[0])


def group_ranks(scores: jax.Array, labels: jax.Array, counts: jax.Array, most: int, order: str,
                absolute: bool = False, mean: bool = False) -> jax.Array:
    """``(batch, n)`` position in the removal order of each feature's group, from ``(batch, n)``
    scores and group labels ``0..most − 1``: groups are ranked (:func:`ranks`) by the sum of
    their features' scores (``mean``: the mean, exactly equal for groups of one value whatever
    their sizes; ``absolute``: the ``|.|`` of either), so
    ``rank < c`` removes ``c`` whole groups. Labels at or above an example's ``counts`` are not
    its groups and go last."""
    wide = jnp.promote_types(scores.dtype, jnp.float32)
    absent = -jnp.inf if order == "morf" else jnp.inf

    def one(s, g, count):
        s = s.astype(wide)
        if mean:  # ref + mean(s - ref), ref a value of the group: equal values, exactly that value
            size = jax.ops.segment_sum(jnp.ones_like(s), g, most)
            ref = jnp.where(size > 0, jax.ops.segment_max(s, g, most), 0)
            total = ref + jax.ops.segment_sum(s - ref[g], g, most) / jnp.maximum(size, 1)
        else:
            total = jax.ops.segment_sum(s, g, most)
        total = jnp.abs(total) if absolute else total
        total = jnp.where(jnp.arange(most) < count, total, absent)
        return ranks(total[None], order)[0][g]

    return jax.vmap(one)(scores, labels, counts)


def split_baseline(baseline: Any, x: jax.Array) -> tuple[str | None, jax.Array | None]:
    """A baseline argument as (static kind, dynamic array); validates before tracing."""
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ValueError(
                f"baseline must be one of {BASELINES} or an array broadcastable to x {x.shape}, "
                f"got {baseline!r}"
            )
        return baseline, None
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return None, jnp.asarray(baseline, x.dtype)
    if not hasattr(baseline, "shape"):
        raise TypeError(
            f"baseline must be one of {BASELINES}, a number, or an array, got {type(baseline).__name__}"
        )
    b = jnp.asarray(baseline, x.dtype)
    try:
        jnp.broadcast_shapes(b.shape, x.shape)
    except ValueError:
        raise ValueError(f"baseline of shape {b.shape} does not broadcast to x {x.shape}") from None
    return None, b


def readout(logits: jax.Array, target: jax.Array, output: str) -> jax.Array:
    """The target's probability, log-probability or logit per row of ``logits`` ``(k, classes)``;
    a row that is probabilities already is read as it is, not softmaxed again
    (:func:`jaxplain.core._outputs.as_probabilities`)."""
    if output in ("probability", "log_probability"):
        logits = as_probabilities(logits, log=output == "log_probability")
    return logits[:, target]


def evaluate_counts(
    f: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    base: jax.Array,
    rank: jax.Array,
    target: jax.Array,
    counts: tuple[int, ...],
    insert: bool,
    output: str,
    batch_size: int | None,
    channels: bool,
) -> jax.Array:
    """``(batch, len(counts))`` outputs with the first ``counts[k]`` ranked features changed.

    A feature is one position of the grid with all its channels (``channels``: the last axis)
    or one element. Deletion (``insert=False``) sets them to ``base``; insertion starts from
    ``base`` and puts them back from ``x``. The ``batch x len(counts)`` perturbed inputs are
    evaluated `batch_size` at a time (None: :func:`jaxplain.core._chunks.auto_chunk`), so memory
    is bounded whatever the steps.
    """
    grid = feature_shape(x.shape, channels)
    c = jnp.asarray(counts, jnp.int32)

    def value(item):  # example i with its first c[k] ranked features changed
        i, k = item
        mask = (rank[i] < c[k]).reshape(grid)
        if channels:
            mask = mask[..., None]
        chosen, other = (x[i], base[i]) if insert else (base[i], x[i])
        return readout(f(jnp.where(mask, chosen, other)[None]), target[i], output)[0]

    n, m = x.shape[0], len(counts)
    items = (jnp.repeat(jnp.arange(n), m), jnp.tile(jnp.arange(m), n))
    return chunked_map(value, items, batch_size).reshape(n, m)
