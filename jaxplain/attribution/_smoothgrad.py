"""SmoothGrad, SmoothGrad-squared and VarGrad around any attribution method."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.attribution import _common, _model_checks
from jaxplain.attribution._gradient import gradient, gradient_x_input
from jaxplain.attribution._integrated import integrated_gradients
from jaxplain.attribution._lrp import lrp
from jaxplain.attribution._modified import deconvnet, deeplift, guided_backprop
from jaxplain.attribution._perturbation import feature_ablation, occlusion
from jaxplain.attribution._shapley import shapley_sampling
from jaxplain.attribution._surrogate import kernel_shap, lime
from jaxplain.core._cpu import sum_leading
from jaxplain.core._keys import check_key

KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")
# the methods that only evaluate f (no gradient: nothing to warn about at f's steps)
_EVALUATING = (feature_ablation, occlusion, shapley_sampling, kernel_shap, lime)
# the methods whose map of a row depends on that row alone (no draws by row position), so
# that the noisy copies can be folded into one batch; any other method (a keyed one such as
# gradient_shap, a partial, the user's own) is vmapped over the samples
_ROW_WISE = (gradient, gradient_x_input, integrated_gradients, guided_backprop, deconvnet,
             deeplift, lrp, occlusion, feature_ablation)


@functools.partial(jax.jit, static_argnames=("f", "samples", "kind", "method", "options",
                                             "batch_size"))
def _smoothgrad(f, x, target, key, stdev, *, samples, kind, method, options, batch_size):
    # noise drawn and added in float32 at least (a bfloat16 input gets a float32 input's
    # draws), the noisy copies cast to x's dtype; the moments summed in float32 at least
    dtype, wide_x = stdev.dtype, _common.widen(x)
    axes = tuple(range(1, x.ndim))
    span = (wide_x.max(axis=axes, keepdims=True) - wide_x.min(axis=axes, keepdims=True))
    sigma = stdev * span

    def attribute(k):
        noisy = (wide_x + sigma * jax.random.normal(k, x.shape, dtype)).astype(x.dtype)
        return _common.widen(method(f, noisy, target, **dict(options)))

    keys = jax.random.split(key, samples)

    def moments(a, axis):
        """The chunk's samples of `a` (on `axis`) summed and summed squared; for vargrad their
        mean and population variance, for :func:`_common.chunked_moments` to merge."""
        total = _common.sum_second if axis == 1 else sum_leading
        if kind != "vargrad":
            return total(a), total(a * a)
        m = a.shape[axis]
        mean = total(a) / m
        deviation = (a - jnp.expand_dims(mean, axis)) * (1 / math.sqrt(m))
        return mean, total(deviation * deviation)

    reduce = _common.chunked_moments if kind == "vargrad" else _common.chunked_reduce
    n, c = x.shape[0], min(batch_size or samples, samples)
    if method in _ROW_WISE and _common.takes_batch(f, x, n * c):
        # each chunk's noisy copies folded behind their example into one batch of n * c, so a
        # batch split over devices stays split (vmapping the method over the keys would merge
        # the samples in front of the batch)
        def chunk(ks):
            m = ks.shape[0]
            noisy = wide_x[:, None] + sigma[:, None] * jax.vmap(
                lambda k: jax.random.normal(k, x.shape, dtype), out_axes=1)(ks)
            a = method(f, _common.fold(noisy.astype(x.dtype)), jnp.repeat(target, m),
                       **dict(options))
            return moments(_common.widen(a).reshape((n, m) + x.shape[1:]), 1)
    else:  # each noisy copy of example i explained at row i of an x-shaped batch, as x is
        # (a keyed method draws by row position), and a model tied to x's batch gets its size
        def chunk(ks):
            return moments(jax.vmap(attribute)(ks), 0)

    first, second = reduce(chunk, keys, batch_size)
    if kind == "smoothgrad":
        return (first / samples).astype(x.dtype)
    if kind == "smoothgrad_sq":
        return (second / samples).astype(x.dtype)
    return second.astype(x.dtype)  # vargrad: the variance


def _check_method(method) -> None:
    """TypeError unless `method` is an attribution function (not a model, not a name)."""
    if isinstance(method, str):
        from jaxplain import attribution

        hint = (f"method=jaxplain.attribution.{method}"
                if callable(getattr(attribution, method, None)) else
                "e.g. method=jaxplain.attribution.integrated_gradients")
        raise TypeError(f"method must be an attribution function, not its name: pass {hint} "
                        f"(got the string {method!r}).")
    if not callable(method):
        raise TypeError("method must be an attribution function method(f, x, target, "
                        "**method_options) -> attributions shaped like x, e.g. "
                        f"jaxplain.attribution.integrated_gradients; got {type(method).__name__}.")
    _common.check_function(method, "method")  # hashable: a static argument


def smoothgrad(f: Callable, x: Float[ArrayLike, "batch *feature"],
               target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *, key, samples: int = 50,
               stdev: float = 0.15, kind: str = "smoothgrad", method: Callable = gradient,
               method_options: Mapping | None = None,
               batch_size: int | None = None) -> Float[Array, "batch *feature"]:
    """Average an attribution method over noisy copies of the input.

    With ``a_k = method(f, x + eps_k, target)`` and ``eps_k ~ N(0, sigma^2)``:
    smoothgrad ``mean_k a_k``, smoothgrad_sq ``mean_k a_k^2``, vargrad
    ``mean_k a_k^2 - (mean_k a_k)^2`` (the population variance, as Captum's; computed as each
    chunk's mean and squared deviations from it, the chunks merged by Chan et al.'s parallel
    formula, which stays accurate and non-negative when the attributions are large and barely
    vary, and finite wherever the variance is). As in the SmoothGrad paper, the noise level is
    relative: ``sigma = stdev * (max(x_i) - min(x_i))`` per example, so a constant example (an
    all-zero image) gets no noise: its smoothgrad is its plain attribution, its vargrad 0.

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``.
      x: the inputs, batch first.
      target: the class to explain per example, shape ``(n,)``, or one int.
      key: a JAX PRNG key (required).
      samples: the number of noisy copies.
      stdev: the noise standard deviation as a fraction of each example's value range.
      kind: ``"smoothgrad"``, ``"smoothgrad_sq"`` or ``"vargrad"``.
      method: any attribution method ``method(f, x, target, **method_options)`` (default
        :func:`gradient`); e.g. ``integrated_gradients`` gives noise-averaged IG. Each noisy
        copy is explained as a batch shaped like `x` (the method vmapped over the samples), so
        a keyed method such as ``functools.partial(gradient_shap, key=k, ...)`` explains
        example ``i`` at row ``i``, whatever `batch_size`; the methods that explain each row on
        their own (the gradient family, IG, DeepLIFT, LRP, occlusion, feature ablation) have
        the copies folded into one batch instead, which keeps a sharded batch split.
      method_options: keyword options of `method`; values must be hashable (ints, strings,
        floats, tuples), as they are static arguments of the compiled function.
      batch_size: the number of noisy copies evaluated at once (None: all at once on GPU/TPU, on CPU
        as many as keep a pass in cache); it bounds memory and does not change the result.

    Returns:
      An array shaped like `x`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import smoothgrad
      >>> f = lambda x: x @ jnp.array([[1.0], [-2.0]])       # linear: the noise changes nothing
      >>> smoothgrad(f, jnp.ones((1, 2)), 0, key=jax.random.key(0), samples=4)
      Array([[ 1., -2.]], dtype=float32)

    References:
      Smilkov, Thorat, Kim, Viegas, Wattenberg. SmoothGrad: removing noise by adding noise.
      arXiv:1706.03825, 2017. Adebayo et al. Local Explanation Methods for Deep Neural Networks
      Lack Sensitivity to Parameter Randomization. arXiv:1810.03307, 2018 (VarGrad).
    """
    _common.check_function(f)
    _check_method(method)
    x, t = _common.check_arguments(f, x, target)  # x's NaN and t's range: one read-back
    key = check_key(key)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    options = tuple(sorted(dict(method_options or {}).items()))
    try:
        hash(options)
    except TypeError as err:
        raise TypeError("method_options values must be hashable (they are static arguments); "
                        f"got {method_options!r}") from err
    if not _common.is_traced(stdev) and (jnp.ndim(stdev) != 0 or not float(stdev) >= 0):
        raise ValueError(f"stdev must be a float >= 0; got {stdev!r}")
    if method not in _EVALUATING:
        _model_checks.warn_if_steps(f, x, "smoothgrad")
    with _model_checks.steps_reported(f):  # method's own warning: said once, above
        return _smoothgrad(f, x, t, key, jnp.asarray(stdev, _common.wide(x.dtype)),
                           samples=_common.check_positive_int(samples, "samples"), kind=kind,
                           method=method, options=options,
                           batch_size=_common.check_batch_size(batch_size))
