"""Complexity of explanations (entropy, Gini sparseness) and conservation / completeness gaps."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.attribution._common import widen
from jaxplain.core._outputs import as_probabilities
from jaxplain.metrics import _checks as checks
from jaxplain.metrics import _perturb as P
from jaxplain.metrics._faithfulness import reading


def _flat_abs(attribution: Any) -> jax.Array:
    a = jnp.asarray(attribution)
    if a.ndim < 2:
        raise ValueError(f"attribution must have a batch axis first, got shape {a.shape}")
    checks.check_nonempty(a, "attribution")
    checks.check_finite(a, "attribution")
    return jnp.abs(a.reshape(a.shape[0], -1)).astype(jnp.promote_types(a.dtype, jnp.float32))


def _zero_as_uniform(a: jax.Array) -> jax.Array:
    """``(batch, n)`` non-negative ``a`` with each all-zero row made all ones: a map that ranks
    no feature above another is scored as a uniform one, not as ``0 / 0``."""
    return jnp.where(a.sum(-1, keepdims=True) > 0, a, 1.0)


@jax.jit
def _gini(a: jax.Array) -> jax.Array:
    v = jnp.sort(_zero_as_uniform(a), axis=-1)
    n = v.shape[-1]
    w = 2 * jnp.arange(1, n + 1, dtype=v.dtype) - n - 1
    return (v * w[None]).sum(-1) / (n * v.sum(-1))


def sparseness(attribution: Float[ArrayLike, "batch *shape"]) -> Float[Array, " batch"]:
    """The Gini index of ``|attribution|`` per example (1 = one feature holds everything).

    ``G = Σ_i (2i − n − 1) v_(i) / (n Σ_i v_i)`` over the ascending sorted absolute values
    ``v_(1) <= ... <= v_(n)``; an all-zero explanation scores as a uniform one, 0 (the most
    diffuse; :func:`complexity` gives it ``log n`` alike).

    Example:
        >>> import jax.numpy as jnp
        >>> sparseness(jnp.array([[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])).tolist()
        [0.75, 0.0]

    References:
        Chalasani et al., "Concise Explanations of Neural Networks using Adversarial
        Training", ICML 2020.
    """
    return _gini(_flat_abs(attribution))


@jax.jit
def _entropy(a: jax.Array) -> jax.Array:
    a = _zero_as_uniform(a)
    p = a / a.sum(-1, keepdims=True)
    return 0.0 - xlogy(p, p).sum(-1)


def complexity(attribution: Float[ArrayLike, "batch *shape"]) -> Float[Array, " batch"]:
    """The entropy (nats) of the fractional contributions ``|a_i| / Σ_j |a_j|`` per example.

    ``log n`` for a uniform explanation, 0 for one feature; an all-zero explanation scores as a
    uniform one, ``log n`` (the most complex; :func:`sparseness` gives it 0 alike).

    Example:
        >>> import jax.numpy as jnp
        >>> [round(v, 4) for v in complexity(jnp.array([[0.0, 2.0], [1.0, 1.0]])).tolist()]
        [0.0, 0.6931]

    References:
        Bhatt, Weller, Moura, "Evaluating and Aggregating Feature-based Model Explanations",
        IJCAI 2020.
    """
    return _entropy(_flat_abs(attribution))


def _read(logits: jax.Array, target: jax.Array, output: str) -> jax.Array:
    """The target's logit or probability per row, in float32 at least. A row that is
    probabilities already (:func:`as_probabilities`, within the tolerance of the model's
    dtype) is read as it is; any other gets the softmax, taken in the wider dtype."""
    wide = as_probabilities(logits) if output == "probability" else widen(logits)
    return jnp.take_along_axis(wide, target[:, None], axis=1)[:, 0]


@functools.partial(jax.jit, static_argnames=("f", "output"))
def _completeness(f, x, target, attribution, baseline, *, output):
    fx = _read(f(x), target, output)
    dtype = jnp.promote_types(fx.dtype, attribution.dtype)  # float32 at least
    gap = fx.astype(dtype)
    if baseline is not None:
        fb = _read(f(jnp.broadcast_to(baseline, x.shape).astype(x.dtype)), target, output)
        gap = gap - fb.astype(dtype)
    return attribution.astype(dtype).reshape(x.shape[0], -1).sum(-1) - gap


def _completeness_baseline(baseline: Any, x: jax.Array) -> jax.Array:
    """`baseline` as an array broadcastable to ``x``: only a number or an array mean one point
    of ``f``'s input (the one the attribution was computed from)."""
    number = isinstance(baseline, (int, float)) and not isinstance(baseline, bool)
    if number or hasattr(baseline, "shape"):
        return P.split_baseline(baseline, x)[1]
    hint = (" (pass 0.0 for zeros, or the array the attribution method was given)"
            if baseline is None or isinstance(baseline, str) else "")
    error = ValueError if isinstance(baseline, str) else TypeError  # a spelling, another type
    raise error(f"baseline must be a number or an array broadcastable to x {x.shape} for "
                f"completeness, the input the attribution was computed from; got "
                f"{baseline!r:.80}{hint}")


def completeness(
    f: Callable[[Array], Array],
    x: Float[ArrayLike, "batch *shape"],
    target: Int[ArrayLike, " batch"] | Int[ArrayLike, ""],
    attribution: Float[ArrayLike, "batch *shape"],
    *,
    baseline: Any = 0.0,
    output: str = "logit",
) -> Float[Array, " batch"]:
    """The completeness gap ``Σ_i a_i − (f_t(x) − f_t(baseline))`` per example.

    Zero for methods with the completeness property (integrated gradients with enough steps,
    DeepLIFT, Shapley values with the same baseline).

    Args:
        f: Maps a batch to logits.
        x: ``(batch, *shape)`` inputs.
        target: ``(batch,)`` classes or one int.
        attribution: ``(batch, *shape)``.
        baseline: A number or an array broadcastable to ``x``.
        output: ``"logit"`` (the output as given) or ``"probability"`` (its softmax; a
            model whose output is a ``jax.nn.softmax`` or ``jax.nn.sigmoid`` already is read
            as it is).

    Returns:
        ``(batch,)`` signed gaps, summed and subtracted in float32 at least from the upcast
        attribution and outputs (the attribution's dtype where wider): a bfloat16 model's gap
        is not rounded to bfloat16.

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda x: x @ jnp.array([[2.0], [3.0]])
        >>> completeness(f, jnp.ones((1, 2)), 0, jnp.array([[2.0, 3.0]])).tolist()
        [0.0]

    References:
        Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep Networks", ICML 2017.
    """
    x, attribution, target = checks.checked(f, x, target, attribution, broadcast=True)
    checks.check_choice(output, "output", P.OUTPUTS)
    b = _completeness_baseline(baseline, x)
    return _completeness(f, x, target, attribution, b, output=reading(f, x, output))


def conservation(
    f: Callable[[Array], Array],
    x: Float[ArrayLike, "batch *shape"],
    target: Int[ArrayLike, " batch"] | Int[ArrayLike, ""],
    attribution: Float[ArrayLike, "batch *shape"],
    *,
    output: str = "logit",
) -> Float[Array, " batch"]:
    """The conservation gap ``Σ_i R_i − f_t(x)`` per example (LRP's relevance conservation).

    Args and result as :func:`completeness`, with no baseline (the explained output itself
    must be redistributed). Note LRP started from the one-hot target conserves 1, not ``f_t``;
    compare such relevance with ``output`` scaled accordingly.

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda x: x @ jnp.array([[2.0], [3.0]])
        >>> conservation(f, jnp.ones((1, 2)), 0, jnp.array([[2.0, 2.0]])).tolist()
        [-1.0]

    References:
        Bach et al., "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by
        Layer-Wise Relevance Propagation", PLoS ONE 2015.
    """
    x, attribution, target = checks.checked(f, x, target, attribution, broadcast=True)
    checks.check_choice(output, "output", P.OUTPUTS)
    return _completeness(f, x, target, attribution, None, output=reading(f, x, output))
