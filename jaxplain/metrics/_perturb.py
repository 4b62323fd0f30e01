"""The shared engine of the perturbation metrics: rank features, mask, evaluate in one batch.

Every example's features are ranked once; the images for all removal counts of all examples are
built with ``jnp.where`` from the rank array and evaluated by ``f`` in one vmapped call (or
chunks of ``batch_size`` images), so a deletion curve costs one forward pass over
``batch x (steps + 1)`` images and nothing per step in Python.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.attribution._common import chunked_map
from jaxplain.core._channels import channels_last_view
from jaxplain.core._outputs import as_probabilities

BASELINES = ("zeros", "mean", "blur")
ORDERS = ("morf", "lerf")
OUTPUTS = ("probability", "logit")


def feature_shape(x_shape: tuple[int, ...]) -> tuple[int, ...]:
    """One example's feature grid: ``(H, W)`` for NHWC images (channels move together), else all."""
    return tuple(x_shape[1:3]) if len(x_shape) == 4 else tuple(x_shape[1:])


def feature_scores(attribution: jax.Array, absolute: bool) -> jax.Array:
    """``(batch, n_features)`` relevance per feature (channels summed for NHWC images)."""
    a = attribution.sum(-1) if attribution.ndim == 4 else attribution
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


def blur(x: jax.Array, sigma: float) -> jax.Array:
    """Separable Gaussian blur of NHWC images per channel, edges extended (``mode="edge"``)."""
    k = jnp.asarray(_gaussian_kernel(sigma), x.dtype)
    r = (k.shape[0] - 1) // 2
    xp = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    rows = sum(k[i] * xp[:, i : i + h, :, :] for i in range(k.shape[0]))
    return sum(k[j] * rows[:, :, j : j + w, :] for j in range(k.shape[0]))


def resolve_baseline(
    x: jax.Array, kind: str | None, value: jax.Array | None, blur_sigma: float
) -> jax.Array:
    """The replacement values, shaped like ``x``.

    ``"zeros"``; ``"mean"``: each example's mean per channel (NHWC) or over its features;
    ``"blur"``: a Gaussian blur of each image; ``None``: ``value`` broadcast to ``x``.
    """
    if kind is None:
        return jnp.broadcast_to(value, x.shape).astype(x.dtype)
    if kind == "zeros":
        return jnp.zeros_like(x)
    if kind == "mean":
        axes = (1, 2) if x.ndim == 4 else tuple(range(1, x.ndim))
        return jnp.broadcast_to(x.mean(axis=axes, keepdims=True), x.shape)
    return blur(x, blur_sigma)


def channels_last(f, x: jax.Array, attribution: jax.Array, value: jax.Array | None):
    """``(f, x, attribution, value)`` for a model that reads its images channels first: the
    model as a function of NHWC images (:func:`jaxplain.core._channels.channels_last_view`)
    and the arrays moved to NHWC, so that a pixel is ranked and replaced with all its
    channels; otherwise as given."""
    f, axis = channels_last_view(f, x)
    if axis is None:
        return f, x, attribution, value
    if value is not None and value.ndim:
        value = jnp.moveaxis(jnp.broadcast_to(value, x.shape), axis, -1)
    return f, jnp.moveaxis(x, axis, -1), jnp.moveaxis(attribution, axis, -1), value


def insertion_start(baseline: Any, x: Any) -> Any:
    """Where an insertion curve starts: `baseline`, or for ``None`` a blur of ``(batch, H, W,
    C)`` images (RISE's choice) and zeros for any other input, where a blur means nothing."""
    if baseline is not None:
        return baseline
    return "blur" if np.ndim(x) == 4 else "zeros"


def split_baseline(baseline: Any, x: jax.Array) -> tuple[str | None, jax.Array | None]:
    """A baseline argument as (static kind, dynamic array); validates before tracing."""
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ValueError(
                f"baseline must be one of {BASELINES} or an array broadcastable to x {x.shape}, "
                f"got {baseline!r}"
            )
        if baseline == "blur" and x.ndim != 4:
            raise ValueError(f'baseline="blur" needs NHWC images, got x of shape {x.shape}')
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
) -> jax.Array:
    """``(batch, len(counts))`` outputs with the first ``counts[k]`` ranked features changed.

    Deletion (``insert=False``) sets them to ``base``; insertion starts from ``base`` and puts
    them back from ``x``. The ``batch x len(counts)`` perturbed inputs are evaluated
    `batch_size` at a time (None: :func:`jaxplain.core._chunks.auto_chunk`), so memory is
    bounded whatever the steps.
    """
    grid = feature_shape(x.shape)
    c = jnp.asarray(counts, jnp.int32)

    def value(item):  # example i with its first c[k] ranked features changed
        i, k = item
        mask = (rank[i] < c[k]).reshape(grid)
        if x.ndim == 4:
            mask = mask[..., None]
        chosen, other = (x[i], base[i]) if insert else (base[i], x[i])
        return readout(f(jnp.where(mask, chosen, other)[None]), target[i], output)[0]

    n, m = x.shape[0], len(counts)
    items = (jnp.repeat(jnp.arange(n), m), jnp.tile(jnp.arange(m), n))
    return chunked_map(value, items, batch_size).reshape(n, m)
