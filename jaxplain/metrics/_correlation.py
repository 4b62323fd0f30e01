"""Faithfulness correlation: do random subsets' relevance sums predict the output drops?"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.metrics import _checks as checks
from jaxplain.metrics import _draws as D
from jaxplain.metrics import _perturb as P
from jaxplain.metrics._faithfulness import _perturbed_copies
from jaxplain.metrics._similarity import _pearson
from jaxplain.core._keys import check_key


def drawn(key: jax.Array, n: int, size: int) -> jax.Array:
    """``(size,)`` indices of `size` features drawn without replacement (the first `size` of a
    random permutation of ``range(n)``)."""
    return jax.random.permutation(key, n)[:size]


def subset(key: jax.Array, n: int, size: int) -> jax.Array:
    """``(n,)`` bool: the features :func:`drawn` with the same arguments."""
    return jnp.zeros(n, bool).at[drawn(key, n, size)].set(True)


@functools.partial(
    jax.jit,
    static_argnames=("f", "samples", "subset_size", "kind", "output", "batch_size", "channels"))
def _correlation(f, x, target, attribution, value, key, *, samples, subset_size, kind, output,
                 batch_size, channels):
    base = P.resolve_baseline(x, kind, value, 0.0, channels)
    scores = P.feature_scores(attribution, False, channels)
    grid = P.feature_shape(x.shape, channels)
    n = scores.shape[-1]

    wide = jnp.promote_types(scores.dtype, jnp.float32)

    def copy(i, j):  # example i with subset j at the baseline, and the subset's relevance
        ids = drawn(D.item_key(key, i, j), n, subset_size)
        m = jnp.zeros(n, bool).at[ids].set(True).reshape(grid)
        m = m[..., None] if channels else m
        # the sum of the subset's own `subset_size` scores, the same reduction for every draw:
        # equal scores give bit-equal sums (a sum over all n features rounds by position)
        return jnp.where(m, base[i], x[i]), scores[i][ids].astype(wide).sum()

    _, y, sums = D.evaluate_copies(f, x, copy, target, samples, output, batch_size)
    # r(sums, y0 - y) = r(sums, -y): the outputs' own scale tells a constant drop from rounding
    return _pearson(sums, -y)


def faithfulness_correlation(
    f: Callable[[Array], Array],
    x: Float[ArrayLike, "batch *shape"],
    target: Int[ArrayLike, " batch"] | Int[ArrayLike, ""],
    attribution: Float[ArrayLike, "batch *shape"],
    *,
    key: Array,
    subset_size: int,
    samples: int = 100,
    baseline: Any = "zeros",
    output: str = "logit",
    batch_size: int | None = None,
) -> Float[Array, " batch"]:
    """Faithfulness correlation: Pearson's r between a subset's relevance and the output drop.

    For ``samples`` random subsets ``S`` of ``subset_size`` features per example, the features
    of ``S`` are set to the baseline; the score is the correlation, over the subsets, of
    ``Σ_{i∈S} a_i`` with ``f_t(x) − f_t(x_{S←baseline})``. 1: the map's sums predict every drop
    linearly (gradient x input on a linear model, zeros baseline); near 0: unrelated. Features
    are as in :func:`jaxplain.metrics.deletion`: where the model's first convolution gives ``x``
    a channel axis a feature is a position (a pixel, a time step, a voxel) whose relevance is its
    channel sum and whose channels are replaced together.

    Subset ``j`` of example ``i`` is the first ``subset_size`` entries of
    ``jax.random.permutation(fold_in(fold_in(key, i), j), n_features)``, so an example's score
    does not depend on the other examples or on ``batch_size``. All ``batch x samples``
    perturbed inputs are evaluated in one compiled, vmapped call (``batch_size`` at a time).

    Args:
        f: Maps a batch to logits ``(batch, classes)`` (or to probabilities, see ``output``).
        x: ``(batch, *shape)`` inputs.
        target: ``(batch,)`` class indices or one int for all.
        attribution: ``(batch, *shape)`` relevance, signed; axes of size 1 broadcast.
        key: PRNG key of the subsets.
        subset_size: Features per subset, ``1 <= subset_size < n_features`` (Quantus' default
            is 224, for 224 x 224 images).
        samples: Subsets per example (at least 2: a correlation needs two points).
        baseline: ``"zeros"``, ``"mean"`` (each example's channel means; refused where no
            convolution reads ``x``, as in :func:`deletion`), a number or an array that
            broadcasts to ``x`` (a reference row such as ``x_train.mean(0)``).
        output: ``"logit"`` (the output as given; Quantus' default) or ``"probability"`` (the
            softmax, or a probability head read as it is, as in :func:`deletion`).
        batch_size: Perturbed inputs per call of ``f`` (``None``: all at once on GPU/TPU, on CPU as
          many as keep a pass in cache).

    Returns:
        ``(batch,)`` correlations in ``[-1, 1]``; 0 where the sums or the drops are constant
        (a spread of a few ulps, the rounding of equal values, counts as constant); NaN for an
        example where an output of the model is NaN or inf.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> w = jnp.array([[1.0], [-2.0], [3.0], [0.5]])
        >>> f = lambda x: x @ w
        >>> x = jnp.array([[1.0, 2.0, -1.0, 4.0]])
        >>> r = faithfulness_correlation(f, x, 0, x * w[:, 0], key=jax.random.key(0),
        ...                              subset_size=2, samples=10)
        >>> r.round(4).tolist()
        [1.0]

    References:
        Bhatt, Weller, Moura, "Evaluating and Aggregating Feature-based Model Explanations",
        IJCAI 2020.
    """
    x, attribution, target, kind, value, output, batch_size = D.prepare(
        f, x, target, attribution, output, batch_size, baseline)
    check_key(key)
    samples = checks.check_positive_int(samples, "samples", 2)
    given_f, given_x = f, x
    layout = P.layout(f, x)
    P.check_kind(kind, x, layout.grid)
    axis = layout.axis
    f, x, attribution, value = P.channels_last(f, x, attribution, value, axis)
    n = math.prod(P.feature_shape(x.shape, axis is not None))
    checks.check_positive_int(subset_size, "subset_size")
    if subset_size >= n:
        raise ValueError(f"subset_size must be below the number of features {n} (pixels of an "
                         f"image, elements otherwise): every subset would be all of them; got "
                         f"{subset_size}")
    _perturbed_copies(given_f, given_x, samples)
    return _correlation(f, x, target, attribution, value, key, samples=samples,
                        subset_size=int(subset_size), kind=kind, output=output,
                        batch_size=batch_size, channels=axis is not None)
