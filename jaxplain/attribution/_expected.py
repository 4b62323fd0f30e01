"""Attributions averaged over a distribution of baselines: GradientSHAP (expected gradients)
and DeepLIFT-SHAP, as Captum's ``GradientShap`` and ``DeepLiftShap``."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.attribution import _common, _model_checks
from jaxplain.attribution._modified import ON_X_BATCH, Rescale, _deeplift
from jaxplain.core._keys import check_key


def draws(key: jax.Array, samples: int, n: int, m: int, dtype) -> tuple:
    """GradientSHAP's random draws per sample: for each of the `n` examples a baseline index
    in ``[0, m)`` and a point ``alpha`` in [0, 1) of `dtype` (:func:`~._common.wide` of the
    input's: bfloat16 would hold 128 values), and a key for the sample's input noise.

    Returns:
      ``(index (samples, n) int32, alpha (samples, n), noise_key (samples,))``.
    """

    def one(k):
        k_index, k_alpha, k_noise = jax.random.split(k, 3)
        return (jax.random.randint(k_index, (n,), 0, m, jnp.int32),
                jax.random.uniform(k_alpha, (n,), dtype), k_noise)

    return jax.vmap(one)(jax.random.split(key, samples))


def sample(x: jax.Array, baselines: jax.Array, stdev: jax.Array, item: tuple) -> tuple:
    """One GradientSHAP sample of a batch: ``(noisy x, its baselines, its alphas)`` for one
    item of :func:`draws`; the noise is ``N(0, stdev^2)``, absolute, as Captum's, drawn and
    added in :func:`~._common.wide` of `x`'s dtype (a bfloat16 input gets a float32 input's
    draws)."""
    index, alpha, k = item
    noise = jax.random.normal(k, x.shape, _common.wide(x.dtype))
    noisy = _common.widen(x) + stdev * noise
    return noisy, baselines[index], alpha.reshape((-1,) + (1,) * (x.ndim - 1))


@functools.partial(jax.jit, static_argnames=("f", "samples", "noise", "batch_size"))
def _gradient_shap(f, x, target, baselines, key, stdev, *, samples, noise, batch_size):
    dtype = stdev.dtype  # the draws' and the arithmetic's: float32 at least
    items = draws(key, samples, x.shape[0], baselines.shape[0], dtype)
    ones = (1,) * (x.ndim - 1)

    def chunk_points(item):  # the chunk's draws laid out example-major, (n, c, ...)
        index, alpha, keys = item
        noisy = _common.widen(x)[:, None]
        if noise:  # each sample's noise drawn as sample() draws it, then put batch-first
            normal = jax.vmap(lambda k: jax.random.normal(k, x.shape, dtype))(keys)
            noisy = noisy + stdev * jnp.swapaxes(normal, 0, 1)
        base = _common.widen(baselines)[index.T]
        difference = noisy - base
        points = base + alpha.T.reshape(alpha.T.shape + ones) * difference
        return points.astype(x.dtype), difference

    weights = jnp.full((samples,), 1.0 / samples, dtype)
    total = _common.folded_gradients(f, chunk_points, target, items, weights, batch_size, x.shape)
    return total.astype(x.dtype)


def gradient_shap(f: Callable, x: Float[ArrayLike, "batch *feature"],
                  target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *, key, baselines,
                  samples: int = 5,
                  stdev: float = 0.0,
                  batch_size: int | None = None) -> Float[Array, "batch *feature"]:
    """GradientSHAP (expected gradients): input-minus-baseline times the gradient at a random
    point between a random baseline and the (noisy) input, averaged over samples.

    For each sample ``k`` and example ``i``: a baseline ``b`` drawn uniformly (with
    replacement) from `baselines`, ``alpha ~ U[0, 1]`` and ``x' = x_i + eps``,
    ``eps ~ N(0, stdev^2)`` elementwise; the sample's attribution is
    ``(x' - b) * grad f_t(b + alpha (x' - b))``, and the result is the mean over `samples`.
    In expectation this is integrated gradients averaged over the baselines, so
    ``E[sum(attr)] = f(x)_t - mean_b f(b)_t`` when ``stdev = 0`` (for a linear model every
    sample sums to ``f(x)_t - f(b)_t`` exactly). The conventions are Captum's
    ``GradientShap`` (``n_samples``, ``stdevs``; the noise is absolute, unlike
    :func:`smoothgrad`'s relative `stdev`); the random numbers are JAX's.

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``.
      x: the inputs, batch first.
      target: the class to explain per example, shape ``(n,)``, or one int.
      key: a JAX PRNG key (required); the draws depend on it, the number of examples and
        `samples` only (not on `batch_size`).
      baselines: the baseline distribution, shape ``(m, *x.shape[1:])``, e.g. a sample of
        training inputs; ``b[None]`` for a single baseline ``b``.
      samples: the number of random draws per example (Captum's ``n_samples``, default 5).
      stdev: the standard deviation of the Gaussian noise added to the input (absolute).
      batch_size: the number of samples evaluated in one forward/backward pass (each over the
        whole batch of `x`); None: all at once on GPU/TPU, on CPU as many as keep a pass in cache.

    Returns:
      An array shaped like `x`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import gradient_shap
      >>> f = lambda x: x @ jnp.array([[1.0], [-2.0]])       # linear: (x - b) * w per sample
      >>> gradient_shap(f, jnp.array([[3.0, 2.0]]), 0, key=jax.random.key(0),
      ...               baselines=jnp.ones((4, 2)), samples=8)
      Array([[ 2., -2.]], dtype=float32)

    References:
      Lundberg, Lee. A Unified Approach to Interpreting Model Predictions. NeurIPS 2017;
      Erion, Janizek, Sturmfels, Lundberg, Lee. Improving performance of deep learning models
      with axiomatic attribution priors and expected gradients. Nature Machine Intelligence
      2021 (arXiv:1906.10670, 2019).
    """
    x, t = _common.check_arguments(f, x, target)
    key = check_key(key)
    b = _common.check_baselines(baselines, x)
    if not _common.is_traced(stdev) and (jnp.ndim(stdev) != 0 or not float(stdev) >= 0):
        raise ValueError(f"stdev must be a float >= 0; got {stdev!r}")
    noise = _common.is_traced(stdev) or float(stdev) != 0  # no noise: no draws to make
    _model_checks.warn_if_steps(f, x, "gradient_shap")
    return _gradient_shap(f, x, t, b, key, jnp.asarray(stdev, _common.wide(x.dtype)),
                          samples=_common.check_positive_int(samples, "samples"), noise=noise,
                          batch_size=_common.check_batch_size(batch_size))


@functools.partial(jax.jit, static_argnames=("f", "batch_size"))
def _deeplift_shap(f, x, target, baselines, *, batch_size):
    def chunk(bs):  # c baselines: DeepLIFT on each example's c pairs, vmapped over examples
        c = bs.shape[0]

        def pairs(xi, ti):
            return _deeplift(f, jnp.broadcast_to(xi, bs.shape), jnp.full((c,), ti), bs)

        return _common.sum_second(_common.widen(jax.vmap(pairs)(x, target)))

    total = _common.chunked_reduce(chunk, baselines, batch_size)
    return (total / baselines.shape[0]).astype(x.dtype)


def deeplift_shap(f: Callable, x: Float[ArrayLike, "batch *feature"],
                  target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *, baselines,
                  batch_size: int | None = None) -> Float[Array, "batch *feature"]:
    """DeepLIFT (rescale rule) averaged over a distribution of baselines, as Captum's
    ``DeepLiftShap``.

    ``attr = mean_j deeplift(f, x, t, baseline=b_j)`` over every baseline ``b_j`` of
    `baselines` (deterministic: no sampling). Where :func:`deeplift` sums to
    ``f(x)_t - f(b)_t`` (networks of linear layers, pools and activations), these attributions
    sum to ``f(x)_t - mean_j f(b_j)_t``.

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``; as for :func:`deeplift`
        (a final softmax gets the same ``UserWarning``).
      x: the inputs, batch first.
      target: the class to explain per example, shape ``(n,)``, or one int.
      baselines: the baseline distribution, shape ``(m, *x.shape[1:])`` (Captum requires
        ``m > 1``; ``m = 1`` is :func:`deeplift` with that baseline).
      batch_size: the number of baselines evaluated in one pass (each over the whole batch of
        `x`, so a pass holds ``batch_size * n`` input-reference pairs); None: all at once on
        GPU/TPU, on CPU as many as keep a pass in cache.

    Returns:
      An array shaped like `x`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import deeplift_shap
      >>> f = lambda x: jax.nn.relu(x @ jnp.array([[1.0], [1.0]]) - 1.0)
      >>> a = deeplift_shap(f, jnp.array([[2.0, 1.0]]), 0, baselines=jnp.array([[0.0, 0.0],
      ...                                                                        [1.0, 1.0]]))
      >>> a.round(4)                          # sums to f(x) - (f(0, 0) + f(1, 1)) / 2 = 1.5
      Array([[1.1667, 0.3333]], dtype=float32)

    References:
      Lundberg, Lee. A Unified Approach to Interpreting Model Predictions. NeurIPS 2017
      (DeepSHAP); Shrikumar, Greenside, Kundaje. Learning Important Features Through
      Propagating Activation Differences. ICML 2017.
    """
    x, t = _common.check_arguments(f, x, target)
    b = _common.check_baselines(baselines, x)
    batch_size = _common.check_batch_size(batch_size)
    c = min(batch_size or len(b), len(b))
    _common.check_batch_of(f, x, 2 * c * x.shape[0], "x and its baselines stacked, "
                           f"{c} baselines of each example at a time", instead=ON_X_BATCH)
    _common.check_batch_of(f, x, 2 * c, f"each example and {c} of its baselines stacked "
                           "(vmapped over the examples)", instead=ON_X_BATCH)
    _model_checks.warn_if_products(f, x, Rescale(), "deeplift_shap", "the attributions do not sum "
                             "to f(x)_t - mean_b f(b)_t")
    _model_checks.warn_if_softmax_output(f, x, "deeplift_shap", "the attributions do not sum to "
                                   "f(x)_t - mean_b f(b)_t")
    _model_checks.warn_if_unruled_nonlinear(f, x, "deeplift_shap", "the attributions do not sum to "
                                      "f(x)_t - mean_b f(b)_t")
    return _deeplift_shap(f, x, t, b, batch_size=_common.check_batch_size(batch_size))
