"""Faithfulness by perturbation: pixel flipping, deletion, insertion and the LeRF change."""

from __future__ import annotations

import dataclasses
import math
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.attribution._common import check_batch_of, widen
from jaxplain.core._capture import warn_about_model
from jaxplain.core._outputs import probability_as_given
from jaxplain.metrics import _checks as checks
from jaxplain.metrics import _perturb as P


def reading(f, x: jax.Array, output: str) -> str:
    """How :func:`jaxplain.metrics._perturb.readout` reads `f`'s output for `output`: a model
    whose output is a softmax or a sigmoid already gives the target's probability as it is
    (``"logit"`` reads the output as given), not softmaxed a second time; a model with one
    output is refused a softmax. A model that mixes the batch's examples (BatchNorm in training
    mode) is warned about, as by every attribution method."""
    warn_about_model(f, x)
    asked, instead = "output='probability'", "output='logit'"
    if output == "probability" and probability_as_given(f, x, asked, instead):
        return "logit"
    return output


def checked(f, x, target, attribution) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:func:`jaxplain.metrics._checks.checked` with `attribution` broadcast to `x`'s shape: a
    map with axes of size 1 (channels summed, ``(n, H, W, 1)``) ranks the pixels as the full
    map's channel sums would."""
    x, attribution, target = checks.checked(f, x, target, attribution, broadcast=True)
    return x, jnp.broadcast_to(attribution, x.shape), target


def _perturbed_copies(f, x, m: int) -> None:
    """Refuse clearly a model that cannot take the batch of `m` perturbed copies of one example
    these metrics evaluate per example (a batch tied to x's size pairs rows wrongly even when
    `m` equals it)."""
    check_batch_of(f, x, m if m != x.shape[0] else m + 1,
                   "each example's perturbed copies, one batch per example")


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=("fractions", "values", "area"),
    meta_fields=(),
)
@dataclasses.dataclass(frozen=True)
class Curve:
    """A perturbation curve per example, in float32 at least whatever the model's dtype (the
    values are its outputs, upcast; the area is summed in the wider dtype).

    Attributes:
        fractions: ``(steps + 1,)`` fraction of features removed (deletion) or inserted
            (insertion) at each point, from 0 to 1.
        values: ``(batch, steps + 1)`` the target's probability (or logit) at each point.
        area: ``(batch,)`` trapezoidal area under ``values`` over ``fractions``.
    """

    fractions: Float[Array, " k"]
    values: Float[Array, "batch k"]
    area: Float[Array, " batch"]


def _prepare(f, x, target, attribution, steps, order, baseline, output, batch_size, insert):
    x, attribution, target = checked(f, x, target, attribution)
    checks.check_positive_int(steps, "steps")
    checks.check_choice(order, "order", P.ORDERS)
    checks.check_choice(output, "output", P.OUTPUTS)
    layout = P.layout(f, x)
    if insert:
        baseline = P.insertion_start(baseline, P.is_image(x, layout.axis is not None))
    kind, value = P.split_baseline(baseline, x)
    P.check_kind(kind, x, layout.grid)
    output = reading(f, x, output)
    return (x, attribution, target, kind, value, output, checks.check_batch_size(batch_size),
            layout)


@functools.partial(
    jax.jit,
    static_argnames=(
        "f", "counts", "n", "insert", "order", "kind", "output", "absolute", "blur_sigma",
        "batch_size", "channels",
    ),
)
def _curve(f, x, target, attribution, value, labels, *, counts, n, insert, order, kind, output,
           absolute, blur_sigma, batch_size, channels):
    base = P.resolve_baseline(x, kind, value, blur_sigma, channels)
    rank = P.removal_ranks(attribution, labels, n, order, absolute, channels)
    values = widen(P.evaluate_counts(f, x, base, rank, target, counts, insert, output,
                                     batch_size, channels and labels is None))
    fractions = jnp.asarray(counts, values.dtype) / n
    area = jnp.trapezoid(values, jnp.broadcast_to(fractions, values.shape), axis=-1)
    return Curve(fractions, values, area)


def _features(feature_mask, x, axis: int | None):
    """``(labels, n)``: the group labels of `feature_mask` for ``x`` with its channel axis
    `axis` moved last (None without a mask) and the number of features or groups that the
    steps count."""
    if feature_mask is None:
        return None, math.prod(x.shape[1:]) // (1 if axis is None else x.shape[axis])
    labels, groups = P.feature_groups(feature_mask, x, axis)
    return jnp.asarray(labels), groups


def _run(f, x, target, attribution, steps, order, baseline, output, absolute, blur_sigma,
         batch_size, insert, feature_mask) -> Curve:
    x, attribution, target, kind, value, output, batch_size, layout = _prepare(
        f, x, target, attribution, steps, order, baseline, output, batch_size, insert
    )
    labels, n = _features(feature_mask, x, layout.axis)
    given_f, given_x = f, x
    f, x, attribution, value = P.channels_last(f, x, attribution, value, layout.axis)
    channels = layout.axis is not None
    counts = P.step_counts(n, steps)
    _perturbed_copies(given_f, given_x, len(counts))
    return _curve(
        f, x, target, attribution, value, labels, counts=counts, n=n, insert=insert,
        order=order, kind=kind, output=output, absolute=bool(absolute),
        blur_sigma=float(blur_sigma), batch_size=batch_size, channels=channels,
    )


def deletion(
    f: Callable[[Array], Array],
    x: Float[ArrayLike, "batch *shape"],
    target: Int[ArrayLike, " batch"] | Int[ArrayLike, ""],
    attribution: Float[ArrayLike, "batch *shape"],
    *,
    steps: int = 50,
    order: str = "morf",
    baseline: Any = "zeros",
    output: str = "probability",
    absolute: bool = False,
    blur_sigma: float = 1.0,
    batch_size: int | None = None,
    feature_mask: Any = None,
) -> Curve:
    """The deletion curve: the target's probability as features are removed by relevance.

    Features are ranked per example by ``attribution``. Where the model's first convolution
    reads ``x`` with a channel axis (NHWC or NCHW images, NWC signals, NDHWC volumes, ...) a
    feature is one position with all its channels (a pixel, a time step, a voxel): its channels
    are summed for ranking and replaced together. Elsewhere a feature is one element (a grey
    volume that the model reads as ``x[..., None]``, vectors, tokens), except that a 4-d batch
    for a model without convolutions is read as NHWC images. After step ``k``
    of ``steps`` the first ``floor(k n / steps)`` features are set to the baseline. With
    ``order="morf"`` (most relevant first) a faithful explanation drops the curve fast (small
    area); with ``"lerf"`` (least relevant first) it keeps it high (large area).

    All ``batch x (steps + 1)`` perturbed inputs are built on device and evaluated in one
    vmapped call of ``f`` (chunked by ``batch_size`` perturbed inputs); ``f`` is a static argument
    of the internal ``jit``, so repeated calls do not retrace.

    Args:
        f: Maps a batch to logits ``(batch, classes)``, or to probabilities through a final
            ``jax.nn.softmax`` or ``jax.nn.sigmoid`` (read as they are, see ``output``).
        x: ``(batch, *shape)`` inputs (images, signals, volumes or flat features).
        target: ``(batch,)`` class indices or one int for all.
        attribution: ``(batch, *shape)`` relevance, higher = more relevant; axes of size 1
            broadcast (a channel-summed ``(batch, H, W, 1)`` map ranks the pixels alike).
        steps: Number of increments (the curve has ``steps + 1`` points).
        order: ``"morf"`` or ``"lerf"``.
        baseline: ``"zeros"``, ``"mean"``, ``"blur"``, a number, or an array that broadcasts
            to ``x`` (a reference row ``(F,)`` such as ``x_train.mean(0)`` for tabular ``x``).
            ``"mean"`` is each example's mean per channel, or over all its elements for a grid
            without channels (a grey volume a convolution reads); ``"blur"`` a Gaussian blur
            along every axis but the batch and channel axes, sigma ``blur_sigma`` positions.
            Both are for inputs a convolution reads and 4-d batches, and refused elsewhere
            (tabular columns, token embeddings), where an example's mean over unrelated
            features means nothing.
        output: ``"probability"`` (the softmax of the logits) or ``"logit"`` (the output as
            given) of the target. A model whose output is a ``jax.nn.softmax`` over the
            classes or a ``jax.nn.sigmoid`` already gives probabilities: ``"probability"``
            reads them as they are (no second softmax), and so does any output row that is
            non-negative and sums to 1 (``jnp.clip(jax.nn.softmax(z), 1e-7, 1)``);
            ``"logit"`` reads every output as given. A model with one output and no sigmoid
            (a regression) takes ``"logit"``.
        absolute: Rank by ``|attribution|`` (channels summed first) instead of signed values.
        blur_sigma: Standard deviation of the blur baseline, in pixels (time steps, voxels).
            It sets the kernel's size, so it is static: each new value compiles once.
        batch_size: Perturbed inputs evaluated at once, which bounds memory whatever the
            number of steps. ``None`` picks it: all ``batch x (steps + 1)`` on GPU/TPU, on CPU
            as many as keep a call in cache (:func:`jaxplain.core._chunks.auto_chunk`).
        feature_mask: Integer group ids, as in :func:`jaxplain.attribution.feature_ablation`:
            one example's shape (or broadcastable to it), shared by the batch, or ``x``'s
            number of axes for one mask per example, each with the same number of groups
            ``G``; concrete, not traced. A group (a one-hot encoded category, a superpixel) is
            ranked by the sum of its elements' attributions (the group's share for a map that
            splits it over them, such as gradient x input; ``|sum|`` with ``absolute``) and
            removed whole; the steps count groups (``floor(k G / steps)``). A map that gives
            every member the whole group's value (``feature_ablation`` with the same mask)
            wants dividing by the group sizes first. None: the features above.

    Returns:
        A :class:`Curve` with ``fractions (steps + 1,)``, ``values (batch, steps + 1)`` and
        ``area (batch,)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> w = jnp.array([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]])
        >>> f = lambda x: x @ w
        >>> x = jnp.ones((1, 3))
        >>> deletion(f, x, 0, w[:, 0] * x, steps=3, output="logit").values
        Array([[ 2.,  0., -1.,  0.]], dtype=float32)

    References:
        Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
        Models", BMVC 2018 (deletion and insertion).
    """
    return _run(f, x, target, attribution, steps, order, baseline, output, absolute,
                blur_sigma, batch_size, insert=False, feature_mask=feature_mask)


def insertion(
    f: Callable[[Array], Array],
    x: Float[ArrayLike, "batch *shape"],
    target: Int[ArrayLike, " batch"] | Int[ArrayLike, ""],
    attribution: Float[ArrayLike, "batch *shape"],
    *,
    steps: int = 50,
    order: str = "morf",
    baseline: Any = None,
    output: str = "probability",
    absolute: bool = False,
    blur_sigma: float = 1.0,
    batch_size: int | None = None,
    feature_mask: Any = None,
) -> Curve:
    """The insertion curve: start from the baseline and put features back by relevance.

    The mirror of :func:`deletion`: after step ``k`` the first ``floor(k n / steps)`` ranked
    features (or groups of ``feature_mask``) carry ``x``'s values and the rest the baseline.
    ``baseline=None`` (the default) starts from a blur of images (4-d ``x`` with a channel axis;
    RISE's default) and from zeros for any other input (a blur means nothing for vectors and
    tokens; pass ``"blur"`` for signals and volumes). With ``order="morf"`` a faithful
    explanation raises the curve fast (large area). Arguments and result as in :func:`deletion`.

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda x: x @ jnp.array([[1.0], [2.0]])
        >>> insertion(f, jnp.ones((1, 2)), 0, jnp.array([[1.0, 2.0]]), steps=2,
        ...           baseline="zeros", output="logit").values
        Array([[0., 2., 3.]], dtype=float32)

    References:
        Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
        Models", BMVC 2018.
    """
    return _run(f, x, target, attribution, steps, order, baseline, output, absolute,
                blur_sigma, batch_size, insert=True, feature_mask=feature_mask)


def pixel_flipping(
    f: Callable[[Array], Array],
    x: Float[ArrayLike, "batch *shape"],
    target: Int[ArrayLike, " batch"] | Int[ArrayLike, ""],
    attribution: Float[ArrayLike, "batch *shape"],
    *,
    steps: int = 50,
    order: str = "morf",
    baseline: Any = "zeros",
    output: str = "logit",
    absolute: bool = False,
    blur_sigma: float = 1.0,
    batch_size: int | None = None,
    feature_mask: Any = None,
) -> Curve:
    """Pixel flipping (selectivity): the target's score as relevant pixels are removed.

    The same curve as :func:`deletion`, read out as the target's logit by default, as Bach et
    al. and Samek et al. plot the classifier score ``f(x)``; a steeper fall (smaller area) means
    a more selective explanation. Arguments and result as in :func:`deletion`.

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda x: x @ jnp.array([[3.0], [1.0]])
        >>> pixel_flipping(f, jnp.ones((1, 2)), 0, jnp.array([[3.0, 1.0]]), steps=2).values
        Array([[4., 1., 0.]], dtype=float32)

    References:
        Bach et al., "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by
        Layer-Wise Relevance Propagation", PLoS ONE 2015; Samek et al., "Evaluating the
        Visualization of What a Deep Neural Network Has Learned", IEEE TNNLS 2017.
    """
    return _run(f, x, target, attribution, steps, order, baseline, output, absolute,
                blur_sigma, batch_size, insert=False, feature_mask=feature_mask)


@functools.partial(
    jax.jit,
    static_argnames=("f", "counts", "groups", "kind", "absolute", "blur_sigma", "batch_size",
                     "probabilities", "channels"),
)
def _lerf_change(f, x, target, attribution, value, labels, *, counts, groups, kind, absolute,
                 blur_sigma, batch_size, probabilities, channels):
    base = P.resolve_baseline(x, kind, value, blur_sigma, channels)
    rank = P.removal_ranks(attribution, labels, groups, "lerf", absolute, channels)
    channels = channels and labels is None
    counts = (0,) + counts
    if probabilities:  # the model outputs p itself: its log, 0 clipped to the smallest normal
        p = P.evaluate_counts(f, x, base, rank, target, counts, False, "logit", batch_size,
                              channels)
        logp = jnp.log(jnp.maximum(widen(p), jnp.finfo(p.dtype).tiny))
    else:
        logp = widen(P.evaluate_counts(f, x, base, rank, target, counts, False,
                                       "log_probability", batch_size, channels))
    # |p - p~| / p as |1 - p~/p| in log space: finite where p itself underflows to 0
    return jnp.abs(1.0 - jnp.exp(logp[:, 1:] - logp[:, :1]))


def pixel_perturbation(
    f: Callable[[Array], Array],
    x: Float[ArrayLike, "batch *shape"],
    attribution: Float[ArrayLike, "batch *shape"],
    *,
    target: Int[ArrayLike, " batch"] | Int[ArrayLike, ""] | None = None,
    fractions: Any = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10),
    baseline: Any = "zeros",
    absolute: bool = True,
    blur_sigma: float = 1.0,
    batch_size: int | None = None,
    feature_mask: Any = None,
) -> Float[Array, "batch q"]:
    """The critical-pathways LeRF metric: the relative change after removing unimportant pixels.

    For each fraction ``q`` the ``int(q n)`` least relevant pixels (features, or groups of
    ``feature_mask``, as in :func:`deletion`; ranked by ``|attribution|`` by default, channels
    summed) are set to the
    baseline and the change of the target's softmax probability ``|p_c(x) - p_c(x~)| / p_c(x)``
    is returned. Lower is better; the paper
    reports the mean over examples (``result.mean(0)``).

    Args:
        f: Maps a batch to logits; a model whose output is a ``jax.nn.softmax`` over the
            classes or a ``jax.nn.sigmoid`` gives ``p`` itself, used as it is (no second softmax; a ``p`` of 0 counts
            as the smallest normal float).
        x: ``(batch, *shape)`` inputs.
        attribution: ``(batch, *shape)`` relevance maps.
        target: Classes to read out; ``None`` (the protocol's choice) uses ``f``'s prediction.
        fractions: The removal fractions ``q`` in ``[0, 1]`` (default 1%..10%).
        baseline: As in :func:`deletion` (the protocol sets pixels to 0 in normalised space).
        absolute: Rank by ``|attribution|`` (the reference choice) or by signed values.
        blur_sigma: For ``baseline="blur"`` (static, as in :func:`deletion`).
        batch_size: Perturbed inputs evaluated at once (``None``: all
            ``batch x (len(fractions) + 1)`` on GPU/TPU, a cache-sized chunk on CPU).
        feature_mask: Groups removed whole, as in :func:`deletion` (``n`` counts groups).

    Returns:
        ``(batch, len(fractions))`` relative probability changes.

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda x: jnp.stack([x.sum(1), jnp.zeros(len(x))], 1)
        >>> pixel_perturbation(f, jnp.ones((1, 4)), jnp.array([[4.0, 3.0, 2.0, 1.0]]),
        ...                    fractions=(0.0,)).tolist()
        [[0.0]]

    References:
        Khakzar et al., "Neural Response Interpretation through the Lens of Critical Pathways",
        CVPR 2021 (protocol of the CAMP-eXplain-AI RoarTorch ``lerf`` code).
    """
    if target is None:
        x, x_check = checks.as_batch(x)
        checks.num_classes(f, x)  # first: it refuses a module given as f
        checks.run_checks(x_check)
        target = jnp.argmax(f(x), axis=-1)
    x, attribution, target = checked(f, x, target, attribution)
    q = checks.check_fractions(fractions)
    kind, value = P.split_baseline(baseline, x)
    layout = P.layout(f, x)
    P.check_kind(kind, x, layout.grid)
    probabilities = probability_as_given(f, x, "the lerf change")
    _perturbed_copies(f, x, len(q) + 1)
    labels, n = _features(feature_mask, x, layout.axis)
    f, x, attribution, value = P.channels_last(f, x, attribution, value, layout.axis)
    return _lerf_change(
        f, x, target, attribution, value, labels, counts=P.fraction_counts(n, q), groups=n,
        kind=kind, absolute=bool(absolute), blur_sigma=float(blur_sigma),
        batch_size=checks.check_batch_size(batch_size), probabilities=probabilities,
        channels=layout.axis is not None,
    )
