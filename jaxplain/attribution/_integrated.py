"""Integrated gradients with Captum's five quadratures, and the completeness delta."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.attribution import _common, _model_checks

METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Step points ``alpha`` in [0, 1] and step weights ``s`` of an IG quadrature.

    The conventions are Captum's: the Riemann rules use weights ``1/n`` (the trapezoid rule
    halves the two end weights, so its weights sum to ``(n - 1)/n``), Gauss-Legendre maps
    numpy's nodes and weights from [-1, 1] to [0, 1].

    Args:
      method: one of ``METHODS``.
      steps: the number of points (at least 2 for the Riemann rules, 1 for Gauss-Legendre).

    Returns:
      ``(alphas, weights)``, float64 arrays of length `steps`, read-only: computed once per
      ``(method, steps)`` and shared by every call.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    n = _common.check_positive_int(steps, "steps", 1 if method == "gausslegendre" else 2)
    return _quadrature(method, n)


@functools.lru_cache(maxsize=64)
def _quadrature(method: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        alphas, weights = 0.5 * (1.0 + nodes), 0.5 * weights
    else:
        weights = np.full(n, 1.0 / n)
        if method == "riemann_trapezoid":
            weights[0] = weights[-1] = 0.5 / n
            alphas = np.linspace(0.0, 1.0, n)
        elif method == "riemann_left":
            alphas = np.linspace(0.0, 1.0 - 1.0 / n, n)
        elif method == "riemann_right":
            alphas = np.linspace(1.0 / n, 1.0, n)
        else:
            alphas = np.linspace(1.0 / (2 * n), 1.0 - 1.0 / (2 * n), n)
    for a in (alphas, weights):
        a.flags.writeable = False
    return alphas, weights


@functools.partial(jax.jit, static_argnames=("f", "steps", "method", "batch_size"))
def _integrated_gradients(f, x, target, baseline, *, steps, method, batch_size):
    alphas, weights = quadrature(method, steps)
    baseline = _common.full_baseline(baseline, x)
    dtype = _common.wide(x.dtype)
    total = _common.line_gradient_sum(f, baseline, x, target, jnp.asarray(alphas, dtype),
                                      jnp.asarray(weights, dtype), batch_size)
    return ((_common.widen(x) - _common.widen(baseline)) * total).astype(x.dtype)


def integrated_gradients(f: Callable, x: Float[ArrayLike, "batch *feature"],
                         target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *, baseline=None,
                         steps: int = 50, method: str = "gausslegendre",
                         batch_size: int | None = None) -> Float[Array, "batch *feature"]:
    """Integrated gradients: the path integral of the gradient from a baseline to the input.

    ``attr = (x - b) * sum_k s_k * grad f_t(b + alpha_k (x - b))``, with the step points and
    weights of :func:`quadrature` (Captum's conventions).

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``.
      x: the inputs, batch first.
      target: the class to explain per example, shape ``(n,)``, or one int.
      baseline: the reference input: None (zeros), a scalar, or an array broadcastable to `x`.
      steps: the number of quadrature points.
      method: ``"gausslegendre"``, ``"riemann_trapezoid"``, ``"riemann_left"``,
        ``"riemann_right"`` or ``"riemann_middle"``.
      batch_size: the number of steps evaluated in one forward/backward pass (each over the
        whole batch of `x`); None: all at once on GPU/TPU, on CPU as many as keep a pass in cache.
        Bounds memory for big models;
        1 keeps `f`'s batches at `x`'s size where the steps are folded into the batch (a model
        without an affine stem that closes over per-example arrays, e.g. a padding mask).

    Returns:
      An array shaped like `x`. ``completeness_delta`` measures how far its sum is from
      ``f(x)_t - f(b)_t``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxplain.attribution import integrated_gradients
      >>> f = lambda x: (x ** 2) @ jnp.ones((2, 1))
      >>> integrated_gradients(f, jnp.array([[1.0, 2.0]]), 0, steps=8).round(4)
      Array([[1., 4.]], dtype=float32)

    References:
      Sundararajan, Taly, Yan. Axiomatic Attribution for Deep Networks. ICML 2017.
    """
    x, t = _common.check_arguments(f, x, target)
    b = _common.baseline_value(baseline, x, method="integrated_gradients")
    quadrature(method, steps)  # validates method and steps before tracing
    _model_checks.warn_if_steps(f, x, "integrated_gradients")
    return _integrated_gradients(f, x, t, b, steps=int(steps), method=method,
                                 batch_size=_common.check_batch_size(batch_size))


@functools.partial(jax.jit, static_argnames=("f",))
def _completeness_delta(f, x, target, baseline, attributions):
    baseline = _common.full_baseline(baseline, x)
    dtype = jnp.promote_types(_common.wide(x.dtype), attributions.dtype)
    total = attributions.astype(dtype).reshape(x.shape[0], -1).sum(axis=1)
    gap = (_common.selected(f, x, target).astype(dtype)
           - _common.selected(f, baseline, target).astype(dtype))
    return total - gap


@functools.partial(jax.jit, static_argnames=("f",))
def _expected_completeness_delta(f, x, target, baselines, attributions):
    dtype = jnp.promote_types(_common.wide(x.dtype), attributions.dtype)
    total = attributions.astype(dtype).reshape(x.shape[0], -1).sum(axis=1)
    reference = f(baselines).astype(dtype).mean(axis=0)  # (classes,): mean_j f(b_j)
    return total - (_common.selected(f, x, target).astype(dtype) - reference[target])


def completeness_delta(f: Callable, x: Float[ArrayLike, "batch *feature"],
                       target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""],
                       attributions: Float[ArrayLike, "batch *feature"], *, baseline=None,
                       baselines=None) -> Float[Array, "batch"]:
    """How far attributions are from completeness: ``sum(attr) - (f(x)_t - f(b)_t)``.

    Integrated gradients (exactly, up to quadrature error), DeepLIFT and Shapley values satisfy
    completeness; this is Captum's convergence delta. Methods averaged over a distribution of
    references (:func:`deeplift_shap`, :func:`gradient_shap` in expectation, :func:`kernel_shap`)
    complete against its mean output: pass it as `baselines` for
    ``sum(attr) - (f(x)_t - mean_j f(b_j)_t)`` (Captum returns one delta per example and
    baseline instead; this is their mean).

    Args:
      f: the model.
      x: the inputs the attributions explain.
      target: the explained classes.
      attributions: an array shaped like `x`.
      baseline: the baseline the attributions used (None: zeros).
      baselines: instead of `baseline`, the reference inputs ``(m, *x.shape[1:])`` the
        attributions were averaged over.

    Returns:
      The signed delta per example, shape ``(n,)``, summed and subtracted in float32 at least
      (the attributions' dtype where wider): a bfloat16 model's delta is not rounded away.
    """
    x, t = _common.check_arguments(f, x, target)
    if baselines is not None and baseline is not None:
        raise ValueError("pass baseline (one reference per example, or one for all) or "
                         "baselines (a distribution of references), not both")
    if tuple(np.shape(attributions)) != tuple(x.shape):
        raise ValueError(f"attributions must be shaped like x {tuple(x.shape)}; "
                         f"got {tuple(np.shape(attributions))}")
    a = jnp.asarray(attributions if hasattr(attributions, "dtype")
                    else np.asarray(attributions, _common.wide(x.dtype)))
    if baselines is not None:
        return _expected_completeness_delta(f, x, t, _common.check_baselines(baselines, x), a)
    return _completeness_delta(f, x, t, _common.baseline_value(baseline, x), a)
