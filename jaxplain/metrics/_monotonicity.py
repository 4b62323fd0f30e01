"""Monotonicity of the output as features are added back in order, and its correlation form."""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.attribution._common import widen
from jaxplain.metrics import _checks as checks
from jaxplain.metrics import _draws as D
from jaxplain.metrics import _perturb as P
from jaxplain.metrics._faithfulness import _perturbed_copies
from jaxplain.metrics._similarity import spearman
from jaxplain.core._keys import check_key


def _steps(steps: Any, n: int) -> int:
    """`steps` (None: one per feature) checked against the `n` features."""
    if steps is None:
        return n
    checks.check_positive_int(steps, "steps", 2)
    if steps > n:
        raise ValueError(f"steps must be at most the number of features {n} (pixels of an "
                         f"image, positions of a signal or volume with channels, elements "
                         f"otherwise), got {steps}")
    return int(steps)


@functools.partial(
    jax.jit,
    static_argnames=("f", "counts", "kind", "output", "absolute", "batch_size", "channels"))
def _monotonicity(f, x, target, attribution, value, *, counts, kind, output, absolute,
                  batch_size, channels):
    base = P.resolve_baseline(x, kind, value, 0.0, channels)
    rank = P.ranks(P.feature_scores(attribution, absolute, channels), "lerf")
    y = widen(P.evaluate_counts(f, x, base, rank, target, counts[1:], True, output, batch_size,
                                channels))
    score = (jnp.diff(y, axis=-1) >= 0).mean(-1, dtype=y.dtype)
    return jnp.where(jnp.isfinite(y).all(-1), score, jnp.nan)  # NaN >= NaN is no step up


def monotonicity(
    f: Callable[[Array], Array],
    x: Float[ArrayLike, "batch *shape"],
    target: Int[ArrayLike, " batch"] | Int[ArrayLike, ""],
    attribution: Float[ArrayLike, "batch *shape"],
    *,
    steps: int | None = None,
    baseline: Any = "zeros",
    output: str = "probability",
    absolute: bool = False,
    batch_size: int | None = None,
) -> Float[Array, " batch"]:
    """Monotonicity: does the output rise as features are added, least relevant first?

    Starting from the baseline, the features of each example are put back from ``x`` in
    increasing order of relevance, ``floor(k n / steps)`` after step ``k``; the score is the
    fraction of the ``steps − 1`` consecutive steps over which the target's output does not
    decrease. 1.0 is Arya et al.'s (and Quantus') ``True``: every feature, added in the map's
    order, helps the prediction at least as much as those before it were allowed to. As in
    :func:`deletion`, a pixel of an image (a time step of a signal, a voxel of a volume, where
    the model's first convolution gives ``x`` a channel axis) is one feature (channels summed,
    replaced together), and ties in relevance go by feature index.

    Args:
        f: Maps a batch to logits (or probabilities, see ``output``).
        x: ``(batch, *shape)`` inputs.
        target: ``(batch,)`` class indices or one int for all.
        attribution: ``(batch, *shape)`` relevance; axes of size 1 broadcast.
        steps: Increments, ``2 <= steps <= n_features``; ``None``: one feature per step (Quantus'
            ``features_in_step=k`` is ``steps = n_features // k``).
        baseline: Where the features are added onto: ``"zeros"``, ``"mean"`` (as in
            :func:`deletion`: refused where no convolution reads ``x``), a number or an array
            broadcastable to ``x`` (Quantus' ``"black"`` is each image's minimum:
            ``x.min(axis=(1, 2, 3), keepdims=True)``).
        output: ``"probability"`` (Quantus' default) or ``"logit"``, as in :func:`deletion`.
        absolute: Order by ``|attribution|`` (Quantus' default) instead of signed values
            (Arya et al.).
        batch_size: Perturbed inputs per call of ``f`` (``None``: all at once on GPU/TPU, on CPU as
          many as keep a pass in cache).

    Returns:
        ``(batch,)`` fraction of non-decreasing steps in ``[0, 1]``; ``== 1`` is the boolean.
        NaN for an example where an output of the model is NaN or inf.

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda x: x @ jnp.array([[1.0], [-2.0], [3.0]])
        >>> x = jnp.ones((1, 3))
        >>> monotonicity(f, x, 0, jnp.array([[1.0, -2.0, 3.0]]), output="logit").tolist()
        [1.0]
        >>> monotonicity(f, x, 0, jnp.array([[-1.0, 2.0, 3.0]]), output="logit").tolist()
        [0.5]

    References:
        Arya et al., "One Explanation Does Not Fit All: A Toolkit and Taxonomy of AI
        Explainability Techniques", arXiv:1909.03012, 2019 (AIX360's ``monotonicity_metric``).
    """
    x, attribution, target, kind, value, output, batch_size = D.prepare(
        f, x, target, attribution, output, batch_size, baseline)
    given_f, given_x = f, x
    layout = P.layout(f, x)
    P.check_kind(kind, x, layout.grid)
    axis = layout.axis
    f, x, attribution, value = P.channels_last(f, x, attribution, value, axis)
    n = math.prod(P.feature_shape(x.shape, axis is not None))
    steps = _steps(steps, n)
    _perturbed_copies(given_f, given_x, steps)
    return _monotonicity(f, x, target, attribution, value, counts=P.step_counts(n, steps),
                         kind=kind, output=output, absolute=bool(absolute),
                         batch_size=batch_size, channels=axis is not None)


@functools.partial(
    jax.jit, static_argnames=("f", "counts", "samples", "output", "batch_size", "channels"))
def _monotonicity_correlation(f, x, target, attribution, key, noise_scale, *, counts, samples,
                              output, batch_size, channels):
    scores = P.feature_scores(attribution, True, channels)
    rank = P.ranks(scores, "lerf")
    c = jnp.asarray(counts, jnp.int32)
    groups = len(counts) - 1
    group = jnp.searchsorted(c, rank, side="right") - 1                # (batch, n) in 0..G-1
    wide = jnp.promote_types(scores.dtype, jnp.float32)
    relevance = jax.vmap(lambda s, g: jax.ops.segment_sum(s.astype(wide), g, groups))(scores,
                                                                                       group)
    grid = P.feature_shape(x.shape, channels)

    def copy(i, j):  # example i with group j // samples perturbed by draw j % samples
        m = (group[i] == j // samples).reshape(grid)
        m = m[..., None] if channels else m
        noise = D.gaussian(D.item_key(key, i, j % samples), noise_scale, x[i])
        return jnp.where(m, x[i] + noise, x[i]).astype(x.dtype), ()

    y0, y, _ = D.evaluate_copies(f, x, copy, target, groups * samples, output, batch_size)
    change = ((y - y0[:, None]) ** 2).reshape(x.shape[0], groups, samples).mean(-1)
    return spearman(relevance, change)


def monotonicity_correlation(
    f: Callable[[Array], Array],
    x: Float[ArrayLike, "batch *shape"],
    target: Int[ArrayLike, " batch"] | Int[ArrayLike, ""],
    attribution: Float[ArrayLike, "batch *shape"],
    *,
    key: Array,
    samples: int = 10,
    noise_scale: float = 0.1,
    steps: int | None = None,
    output: str = "logit",
    batch_size: int | None = None,
) -> Float[Array, " batch"]:
    """Monotonicity correlation: Spearman's ρ between ``|relevance|`` and the effect of noise.

    Per example, the features are split into ``steps`` groups of consecutive ``|attribution|``
    rank (one feature each by default). Group ``g`` is perturbed ``samples`` times with
    Gaussian noise ``noise_scale · N(0, 1)`` added to its features only, and its effect is the
    mean squared change of the target's output ``mean_s (f_t(x~_gs) − f_t(x))²``. The score is
    Spearman's correlation, over the groups, of the groups' summed ``|attribution|`` with their
    effects (average ranks for ties; 0 where either is constant). 1: the map ranks features by
    how much the output reacts to them.

    Draw ``s`` of example ``i`` is ``noise_scale * jax.random.normal(fold_in(fold_in(key, i),
    s), x.shape[1:])``, shared by the groups (each keeps only its own features' entries, so
    groups are perturbed independently); an example's score does not depend on the other
    examples or ``batch_size``. All ``batch x steps x samples`` inputs run in one compiled call.

    Args:
        f: Maps a batch to logits (or probabilities, see ``output``).
        x: ``(batch, *shape)`` inputs.
        target: ``(batch,)`` class indices or one int for all.
        attribution: ``(batch, *shape)`` relevance; axes of size 1 broadcast.
        key: PRNG key of the noise.
        samples: Noise draws per group (at least 2).
        noise_scale: Standard deviation of the noise.
        steps: Groups, ``2 <= steps <= n_features``; ``None``: one per feature (pixel).
        output: ``"logit"`` (the output as given) or ``"probability"``, as in
            :func:`deletion`. Quantus reads the probability, but a confident prediction's
            probability (1.0 in float32) moves by less than its rounding under one pixel's
            noise, and the effects then rank at random: read the logit.
        batch_size: Perturbed inputs per call of ``f`` (``None``: all at once on GPU/TPU, on CPU as
          many as keep a pass in cache).

    Returns:
        ``(batch,)`` Spearman correlations in ``[-1, 1]``; NaN for an example where an output
        of the model is NaN or inf.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> w = jnp.array([[1.0], [-4.0], [2.0], [0.5]])
        >>> f = lambda x: x @ w
        >>> monotonicity_correlation(f, jnp.ones((1, 4)), 0, w.T, key=jax.random.key(0),
        ...                          samples=50).tolist()
        [1.0]

    References:
        Nguyen, Martínez, "On Quantitative Aspects of Model Interpretability",
        arXiv:2007.07584, 2020.
    """
    x, attribution, target, _, _, output, batch_size = D.prepare(
        f, x, target, attribution, output, batch_size)
    check_key(key)
    samples = checks.check_positive_int(samples, "samples", 2)
    noise_scale = D.check_scale(noise_scale, "noise_scale")
    given_f, given_x = f, x
    axis = P.layout(f, x).axis
    f, x, attribution, _ = P.channels_last(f, x, attribution, None, axis)
    n = math.prod(P.feature_shape(x.shape, axis is not None))
    steps = _steps(steps, n)
    _perturbed_copies(given_f, given_x, steps * samples)
    return _monotonicity_correlation(f, x, target, attribution, key,
                                     counts=P.step_counts(n, steps), samples=samples,
                                     noise_scale=noise_scale, output=output,
                                     batch_size=batch_size, channels=axis is not None)
