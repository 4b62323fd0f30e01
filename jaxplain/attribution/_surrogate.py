"""KernelSHAP and LIME: weighted linear surrogates fitted on feature-group coalitions."""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from jaxplain.attribution import _common

EXACT_LIMIT = 14  # groups up to which kernel_shap enumerates every coalition


def _coalition_values(f, x, target, baseline, mask, coalitions, batch_size):
    """``f_t`` with the groups on in each coalition taken from `x`, the rest from `baseline`."""

    def value(z):
        return _common.selected(f, jnp.where(z[mask], x, baseline), target)

    return _common.chunked_map(value, coalitions, batch_size)  # (m, n)


def _lstsq(a, y):
    return jnp.linalg.lstsq(a, y, rcond=None)[0]


@functools.partial(jax.jit, static_argnames=("f", "groups", "batch_size"))
def _kernel_shap(f, x, target, baseline, mask, coalitions, weights, *, groups, batch_size):
    v0 = _common.selected(f, baseline, target)
    v1 = _common.selected(f, x, target)
    if groups == 1:
        phi = (v1 - v0)[None]
    else:
        y = _coalition_values(f, x, target, baseline, mask, coalitions, batch_size)
        z = coalitions.astype(x.dtype)
        # efficiency as a constraint: eliminate the last group, phi_G = (v1 - v0) - sum(rest)
        a = (z[:, :-1] - z[:, -1:]) * jnp.sqrt(weights)[:, None]
        rhs = (y - v0 - z[:, -1:] * (v1 - v0)) * jnp.sqrt(weights)[:, None]
        rest = _lstsq(a, rhs)  # (G - 1, n)
        phi = jnp.concatenate([rest, (v1 - v0 - rest.sum(axis=0))[None]], axis=0)
    return _common.spread(phi, mask, x)


def _shapley_kernel(groups: int, size: np.ndarray) -> np.ndarray:
    return (groups - 1) / (np.array([math.comb(groups, int(k)) for k in size]) * size
                           * (groups - size))


def _all_coalitions(groups: int) -> tuple[np.ndarray, np.ndarray]:
    z = np.array([c for c in itertools.product([False, True], repeat=groups)
                  if 0 < sum(c) < groups], bool)
    return z, _shapley_kernel(groups, z.sum(axis=1))


def _sampled_coalitions(key, groups: int, samples: int):
    sizes = np.arange(1, groups)
    p = (groups - 1) / (sizes * (groups - sizes))
    k_size, k_perm = jax.random.split(key)
    size = jax.random.choice(k_size, jnp.asarray(sizes), (samples,), p=jnp.asarray(p / p.sum()))
    ranks = jax.vmap(lambda k: jax.random.permutation(k, groups))(jax.random.split(k_perm, samples))
    return ranks < size[:, None], jnp.ones((samples,), jnp.float32)


def kernel_shap(f: Callable, x: Float[Array, "batch *feature"], target: Int[Array, "batch"] | int,
                *, key=None, samples: int | None = None, baseline=0.0, feature_mask=None,
                batch_size: int | None = None) -> Float[Array, "batch *feature"]:
    """KernelSHAP: Shapley values as the weighted least-squares fit of a linear surrogate.

    The surrogate ``g(z) = f(b)_t + sum_j phi_j z_j`` over coalitions ``z`` of feature groups
    (groups on take `x`, off take the baseline) is fitted with the Shapley kernel weights
    ``(G - 1) / (C(G, |z|) |z| (G - |z|))`` under the efficiency constraint
    ``sum_j phi_j = f(x)_t - f(b)_t``. With every coalition enumerated the fit equals the exact
    Shapley values.

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``.
      x: the inputs, batch first.
      target: the class to explain per example, shape ``(n,)``, or one int.
      key: a JAX PRNG key; required when `samples` is given.
      samples: None enumerates all ``2^G - 2`` coalitions (exact; G <= 14 groups); an int draws
        that many coalitions from the Shapley kernel (sizes by kernel weight, then uniform
        members) and fits them with equal weights.
      baseline: the value of an absent feature: a scalar or an array broadcastable to `x`.
      feature_mask: integer group ids with one example's shape (or broadcastable to it), shared
        by the batch, or one mask per example with `x`'s number of axes (a group an example
        lacks gets 0); None: every element is its own group.
      batch_size: the number of coalitions evaluated at once (None: all).

    Returns:
      An array shaped like `x`; members of a group share its value.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxplain.attribution import kernel_shap
      >>> f = lambda x: x[:, :1] * x[:, 1:2] + x[:, 2:]
      >>> kernel_shap(f, jnp.array([[2.0, 3.0, 1.0]]), 0).round(4)
      Array([[3., 3., 1.]], dtype=float32)

    References:
      Lundberg, Lee. A Unified Approach to Interpreting Model Predictions. NeurIPS 2017.
    """
    _common.check_function(f)
    x = _common.check_x(x)
    t = _common.check_target(f, x, target)
    b = _common.check_baseline(baseline, x)
    mask, groups = _common.group_mask(feature_mask, x)
    if samples is None:
        if groups > EXACT_LIMIT:
            raise ValueError(f"kernel_shap enumerates all coalitions when samples is None, which "
                             f"needs at most {EXACT_LIMIT} feature groups; got {groups}. Pass a "
                             "coarser feature_mask, or samples=... and key=...")
        z, w = _all_coalitions(groups) if groups > 1 else (np.zeros((1, 1), bool), np.ones(1))
        coalitions, weights = jnp.asarray(z), jnp.asarray(w, x.dtype)
    else:
        key = _common.check_key(key)
        samples = _common.check_positive_int(samples, "samples")
        if groups > 1:
            coalitions, weights = _sampled_coalitions(key, groups, samples)
        else:
            coalitions, weights = jnp.zeros((1, 1), bool), jnp.ones((1,))
    return _kernel_shap(f, x, t, b, mask, coalitions, weights.astype(x.dtype), groups=groups,
                        batch_size=_common.check_batch_size(batch_size))


@functools.partial(jax.jit, static_argnames=("f", "groups", "samples", "batch_size"))
def _lime(f, x, target, baseline, mask, key, kernel_width, ridge, *, groups, samples, batch_size):
    z = jax.random.bernoulli(key, 0.5, (samples, groups)).at[0].set(True)  # the input itself first
    y = _coalition_values(f, x, target, baseline, mask, z, batch_size)
    zf = z.astype(x.dtype)
    # cosine distance between the coalition and the all-on vector, exponential kernel
    distance = 1.0 - jnp.sqrt(zf.sum(axis=1) / groups)
    w = jnp.sqrt(jnp.exp(-(distance ** 2) / kernel_width ** 2))
    design = jnp.concatenate([jnp.ones((samples, 1), x.dtype), zf], axis=1) * w[:, None]
    penalty = jnp.sqrt(ridge) * jnp.eye(groups + 1, dtype=x.dtype)[1:]  # intercept unpenalized
    a = jnp.concatenate([design, penalty], axis=0)
    rhs = jnp.concatenate([y * w[:, None], jnp.zeros((groups, y.shape[1]), x.dtype)], axis=0)
    coef = _lstsq(a, rhs)[1:]  # (G, n)
    return _common.spread(coef, mask, x)


def lime(f: Callable, x: Float[Array, "batch *feature"], target: Int[Array, "batch"] | int, *,
         key, samples: int = 200, baseline=0.0, feature_mask=None, kernel_width: float = 0.25,
         ridge: float = 1e-3, batch_size: int | None = None) -> Float[Array, "batch *feature"]:
    """LIME: the coefficients of a locally weighted linear surrogate on feature groups.

    Coalitions ``z`` are drawn with each group on with probability 1/2 (the first is all on),
    the model is evaluated with the groups that are off set to the baseline, and a ridge
    regression ``f_t ~ c + sum_j beta_j z_j`` is fitted with weights
    ``exp(-d(z, 1)^2 / kernel_width^2)``, ``d`` the cosine distance to the all-on coalition.

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``.
      x: the inputs, batch first.
      target: the class to explain per example, shape ``(n,)``, or one int.
      key: a JAX PRNG key (required).
      samples: the number of coalitions.
      baseline: the value of an absent feature: a scalar or an array broadcastable to `x`.
      feature_mask: integer group ids with one example's shape (or broadcastable to it), shared
        by the batch (superpixels), or one mask per example with `x`'s number of axes;
        None: every element is its own group.
      kernel_width: the width of the exponential kernel (LIME's image default, 0.25).
      ridge: the L2 penalty on the coefficients (not the intercept).
      batch_size: the number of coalitions evaluated at once (None: all).

    Returns:
      An array shaped like `x`: each element gets its group's coefficient.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import lime
      >>> f = lambda x: x @ jnp.array([[1.0], [-2.0], [0.5]])   # linear: recovered exactly
      >>> lime(f, jnp.ones((1, 3)), 0, key=jax.random.key(0), ridge=0.0).round(3)
      Array([[ 1. , -2. ,  0.5]], dtype=float32)

    References:
      Ribeiro, Singh, Guestrin. "Why Should I Trust You?": Explaining the Predictions of Any
      Classifier. KDD 2016.
    """
    _common.check_function(f)
    x = _common.check_x(x)
    t = _common.check_target(f, x, target)
    key = _common.check_key(key)
    b = _common.check_baseline(baseline, x)
    mask, groups = _common.group_mask(feature_mask, x)
    for name, value in (("kernel_width", kernel_width), ("ridge", ridge)):
        if not _common.is_traced(value) and (jnp.ndim(value) != 0 or not float(value) >= 0):
            raise ValueError(f"{name} must be a float >= 0; got {value!r}")
    return _lime(f, x, t, b, mask, key, jnp.asarray(kernel_width, x.dtype),
                 jnp.asarray(ridge, x.dtype), groups=groups,
                 samples=_common.check_positive_int(samples, "samples", 2),
                 batch_size=_common.check_batch_size(batch_size))
