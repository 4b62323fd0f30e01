"""IROF: iterative removal of segments, most relevant (by mean relevance) first."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.attribution._common import widen
from jaxplain.metrics import _draws as D
from jaxplain.metrics import _perturb as P
from jaxplain.metrics._faithfulness import _perturbed_copies


@functools.partial(
    jax.jit, static_argnames=("f", "most", "kind", "output", "batch_size", "channels"))
def _irof(f, x, target, attribution, value, labels, counts, *, most, kind, output, batch_size,
          channels):
    base = P.resolve_baseline(x, kind, value, 0.0, channels)
    scores = P.feature_scores(attribution, False, channels)
    rank = P.group_ranks(scores, labels.reshape(labels.shape[0], -1), counts, most, "morf",
                         mean=True)
    y = widen(P.evaluate_counts(f, x, base, rank, target, tuple(range(most + 1)), False, output,
                                batch_size, channels))
    v = y / y[:, :1]
    k = jnp.arange(1, most + 1, dtype=counts.dtype)
    steps = jnp.where(k[None] <= counts[:, None], (v[:, :-1] + v[:, 1:]) / 2, 0.0)
    return 1.0 - steps.sum(-1) / counts.astype(steps.dtype)


def irof(
    f: Callable[[Array], Array],
    x: Float[ArrayLike, "batch *shape"],
    target: Int[ArrayLike, " batch"] | Int[ArrayLike, ""],
    attribution: Float[ArrayLike, "batch *shape"],
    segments: Int[ArrayLike, "*grid"] | Int[ArrayLike, "batch *grid"],
    *,
    baseline: Any = "mean",
    output: str = "probability",
    batch_size: int | None = None,
) -> Float[Array, " batch"]:
    """IROF: the area over the curve of the target's score as segments are removed.

    Each example's segments (superpixels) are ranked by their mean relevance (channel sums where
    ``x`` has a channel axis) and set to the baseline one after another, most relevant first.
    With ``y_k`` the target's output after ``k`` of the example's ``S`` segments are removed,
    the score is the area over the curve of ``y_k / y_0`` on the removed fraction ``k / S``:
    ``1 − Σ_{k=1..S} (y_{k−1} + y_k) / (2 y_0 S)``. Higher is better: the output falls fast
    when the segments the map calls relevant go. Ties go by segment id.

    Segments come from the caller (SLIC superpixels in the paper and in Quantus:
    ``skimage.segmentation.slic(image)``, a grid of patches, or a semantic mask): an int mask
    over the grid of features (as in :func:`jaxplain.metrics.deletion`): ``(H, W)`` for NHWC
    and NCHW images, ``(T,)`` for a signal and ``(D, H, W)`` for a volume with channels,
    ``x.shape[1:]`` for other inputs, shared by the batch or one per example with a batch axis
    in front. Any int ids serve; each example's distinct ids are its segments. All
    ``batch x (S + 1)`` inputs run in one compiled call (``batch_size`` at a time).

    Args:
        f: Maps a batch to logits (or probabilities, see ``output``).
        x: ``(batch, *shape)`` inputs.
        target: ``(batch,)`` class indices or one int for all.
        attribution: ``(batch, *shape)`` relevance; axes of size 1 broadcast.
        segments: ``grid`` or ``(batch, *grid)`` int segment ids (concrete, not traced).
        baseline: What a removed segment becomes: ``"mean"`` (each example's channel means; the
            paper's choice; refused where no convolution reads ``x``: pass a reference row such
            as ``x_train.mean(0)``), ``"zeros"``, a number, or an array broadcastable to ``x``.
        output: ``"probability"`` (Quantus' default) or ``"logit"``, as in :func:`deletion`;
            the curve is divided by ``y_0``, so it wants a positive score.
        batch_size: Perturbed inputs per call of ``f`` (``None``: all at once on GPU/TPU, on CPU as
          many as keep a pass in cache).

    Returns:
        ``(batch,)`` the area over the normalised curve (``1 − area`` under it).

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda x: jnp.stack([x[:, :2].sum(1), x[:, 2:].sum(1)], 1)
        >>> x = jnp.ones((1, 4))
        >>> segments = jnp.array([0, 0, 1, 1])
        >>> irof(f, x, 0, jnp.array([[1.0, 1.0, 0.0, 0.0]]), segments, baseline="zeros",
        ...      output="logit").tolist()
        [0.75]

    References:
        Rieger, Hansen, "IROF: a low resource evaluation metric for explanation methods",
        ICLR 2020 workshop AI for Affordable Healthcare, arXiv:2003.08747.
    """
    x, attribution, target, kind, value, output, batch_size = D.prepare(
        f, x, target, attribution, output, batch_size, baseline)
    given_f, given_x = f, x
    layout = P.layout(f, x)
    P.check_kind(kind, x, layout.grid)
    axis = layout.axis
    f, x, attribution, value = P.channels_last(f, x, attribution, value, axis)
    labels, counts = P.relabel(segments, x.shape[0], P.feature_shape(x.shape, axis is not None))
    if counts.min() < 2:
        raise ValueError(f"segments must split every example into at least 2 segments, got "
                         f"{counts.min()} for example {int(counts.argmin())}")
    most = int(counts.max())
    _perturbed_copies(given_f, given_x, most + 1)
    return _irof(f, x, target, attribution, value, jnp.asarray(labels), jnp.asarray(counts),
                 most=most, kind=kind, output=output, batch_size=batch_size,
                 channels=axis is not None)
