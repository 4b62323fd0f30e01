"""KernelSHAP and LIME: weighted linear surrogates fitted on feature-group coalitions.

With one feature mask per example, every example is fitted on its own groups: they are
renumbered 0..c-1 in each example (:func:`own_groups`), coalitions are drawn over the ``C``
slots of the example with the most groups (an example's k-th group draws the same numbers
whatever the other examples hold, so a batch gives what each example gives alone), and the
slots past an example's own get 0. The fits run in float32 at least (a bfloat16 model's outputs
are upcast; ``jnp.linalg.lstsq`` takes no bfloat16 or float16), and the coefficients come back
in `x`'s dtype.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.attribution import _common
from jaxplain.attribution._value_checks import is_traced
from jaxplain.core._keys import check_key

EXACT_LIMIT = 14  # groups up to which kernel_shap enumerates every coalition


def own_groups(feature_mask, x: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_common.group_mask` with each example's groups renumbered 0..c-1 in the order of
    their ids, and the counts ``c`` ``(n,)``, for a mask per example (`x`'s shape); a mask
    shared by the batch (one example's shape) as there, with counts ``(1,)``: ``[G]``."""
    mask, groups = _common.group_mask(feature_mask, x)
    if mask.ndim < x.ndim:
        return mask, np.array([groups])
    flat = mask.reshape(len(mask), -1)
    order = np.argsort(flat, axis=1, kind="stable")
    ids = np.take_along_axis(flat, order, axis=1)
    first = np.concatenate([np.ones((len(flat), 1), bool), ids[:, 1:] != ids[:, :-1]], axis=1)
    local = np.empty_like(flat)
    np.put_along_axis(local, order, np.cumsum(first, axis=1, dtype=np.int32) - 1, axis=1)
    return local.reshape(mask.shape), first.sum(axis=1)


def _uniforms(key, samples: int, groups: int) -> jax.Array:
    """``(samples, groups)`` float32 uniforms, column k drawn from its own key (float32 with
    x64 on too: the same key gives the same coalitions)."""
    column = lambda k: jax.random.uniform(jax.random.fold_in(key, k), (samples,), jnp.float32)
    return jax.vmap(column, out_axes=1)(jnp.arange(groups))


def on_groups(z: jax.Array, mask: jax.Array) -> jax.Array:
    """Per-group values laid on the elements: `z` ``(G,)`` shared by the batch, or ``(n, G)``
    one row per example, read through `mask` (one example's shape, or `x`'s)."""
    if z.ndim == 2:
        rows = jnp.arange(z.shape[0]).reshape((-1,) + (1,) * (mask.ndim - 1))
        return z[rows, mask]
    return z[mask]


def _coalition_values(f, x, target, baseline, mask, coalitions, batch_size):
    """``f_t`` with the groups on in each coalition taken from `x`, the rest from `baseline`;
    `coalitions` is ``(m, G)`` (group k: each example's k-th) or ``(m, n, G)`` one per
    example. Returns ``(m, n)``."""

    def inputs(zs):  # (c, [n,] G) -> (n, c, ...)
        on = jax.vmap(lambda z: on_groups(z, mask))(zs)
        on = on[None] if on.ndim == x.ndim else jnp.moveaxis(on, 0, 1)
        return jnp.where(on, x[:, None], baseline[:, None])

    return _common.folded_values(f, x, target, inputs, coalitions, batch_size)


def _lstsq(a, y):
    return jnp.linalg.lstsq(a, y, rcond=None)[0]


def _per_example(fit, z, y, *args, each: bool):
    """`fit` once for a mask shared by the batch (coalitions ``(m, G)``, ``y`` ``(m, n)``), or,
    for a mask per example (`each`), vmapped over examples: coalitions ``(m, G)`` shared or
    ``(m, n, G)``, `args` with a leading axis ``n``. Returns ``(G, n)``."""
    if not each:
        return fit(z, y, *args)
    one = lambda zi, yi, *a: fit(zi, yi[:, None], *a)[:, 0]
    axes = (None if z.ndim == 2 else 1, 1) + (0,) * len(args)
    return jax.vmap(one, in_axes=axes, out_axes=1)(z, y, *args)


def _efficient_fit(z, y, v0, v1, weights, free, last):
    """Weighted least squares of ``y - v0 ~ z @ phi`` under ``sum(phi) = v1 - v0``: the groups
    in `free` ``(G,)`` are fitted, `last` takes the remainder, the rest get 0. `z` ``(m, G)``,
    `y` ``(m, k)``, `v0` and `v1` ``(k,)``; returns ``(G, k)``."""
    sw = jnp.sqrt(weights)[:, None]
    z_last = jnp.take(z, last, axis=1)[:, None]
    v0, gap = jnp.reshape(v0, (1, -1)), jnp.reshape(v1 - v0, (1, -1))  # (1, k); k = 1 in vmap
    rest = _lstsq((z - z_last) * free[None] * sw, (y - v0 - z_last * gap) * sw) * free[:, None]
    return rest + (jax.nn.one_hot(last, z.shape[1], dtype=z.dtype)[:, None]
                   * (gap - rest.sum(0, keepdims=True)))


@functools.partial(jax.jit, static_argnames=("f", "batch_size"))
def _kernel_shap(f, x, target, baseline, mask, coalitions, weights, counts, *, batch_size):
    dtype = weights.dtype  # the fit's: float32 at least
    v0 = _common.selected(f, baseline, target).astype(dtype)
    v1 = _common.selected(f, x, target).astype(dtype)
    groups, each = coalitions.shape[-1], mask.ndim == x.ndim
    if groups == 1:
        phi = (v1 - v0)[None]
    else:
        y = _coalition_values(f, x, target, baseline, mask, coalitions, batch_size).astype(dtype)
        last = counts - 1  # each example's last group takes the remainder
        free = (jnp.arange(groups)[None] < last[:, None]).astype(dtype)
        if each:  # weights (m,) shared or (m, n) -> (n, m)
            w = jnp.broadcast_to(weights.T, (len(x),) + weights.shape[:1])
        else:
            free, last, w = free[0], last[0], weights
        fit = lambda z, y, v0, v1, free, last, w: _efficient_fit(z, y, v0, v1, w, free, last)
        phi = _per_example(fit, coalitions.astype(dtype), y, v0, v1, free, last, w, each=each)
    return _common.spread(phi.astype(_common.result_dtype(x.dtype)), mask, x)


def _shapley_kernel(groups: int, size: np.ndarray) -> np.ndarray:
    return (groups - 1) / (np.array([math.comb(groups, int(k)) for k in size]) * size
                           * (groups - size))


def _all_coalitions(groups: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``2^G - 2`` proper coalitions ``(m, G)`` (``itertools.product``'s order: the first
    group is the highest bit) and their Shapley kernel weights."""
    bits = np.arange(1, 2 ** groups - 1, dtype=np.int64)[:, None] >> np.arange(groups)[::-1]
    z = (bits & 1).astype(bool)
    return z, _shapley_kernel(groups, z.sum(axis=1))


def _covered(coalitions: jax.Array, counts: np.ndarray, dtype) -> tuple:
    """Sampled coalitions ``(samples, n, G)``, those of each example whose budget covers all its
    proper coalitions (``2^c - 2 <= samples`` for its `c` groups) replaced by these: then exact,
    as alone. Returns ``(coalitions, weights (samples, n))``: Shapley kernel weights of the
    enumerated (0 past them), 1 for the sampled."""
    samples = coalitions.shape[0]
    z = np.zeros(coalitions.shape, bool)
    w = np.ones((samples, len(counts)))
    covered = np.zeros(len(counts), bool)
    for i, c in enumerate(counts.tolist()):
        if 1 < c and 2 ** c - 2 <= samples:
            zi, wi = _all_coalitions(c)
            z[:len(zi), i, :c] = zi
            w[:, i] = np.pad(wi, (0, samples - len(zi)))
            covered[i] = True
    return (jnp.where(covered[None, :, None], z, coalitions), jnp.asarray(w, dtype))


def _size_cdf(counts: np.ndarray, groups: int) -> np.ndarray:
    """``(n, G - 1)`` cumulative probabilities of coalition sizes 1..G-1 under the Shapley
    kernel, for examples with `counts` groups each (sizes past an example's count: none)."""
    size = np.arange(1, max(groups, 2))
    c = counts[:, None].astype(np.float64)
    p = np.where(size < c, (c - 1) / (size * np.maximum(c - size, 1)), 0.0)
    p[counts <= 1, 0] = 1.0  # one group: no proper coalition; any size fits nothing
    return np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)


@functools.partial(jax.jit, static_argnames=("samples",))
def _draw_coalitions(key, cdf, present, *, samples):
    k_size, k_member = jax.random.split(key)
    r = jax.random.uniform(k_size, (samples, 1, 1), jnp.float32)
    size = 1 + jnp.sum(r >= cdf[None, :, :-1], axis=-1)  # (samples, n)
    u = jnp.where(present[None], _uniforms(k_member, samples, present.shape[1])[:, None], 2.0)
    rank = jnp.argsort(jnp.argsort(u, axis=-1), axis=-1)
    return rank < size[..., None]


def _sampled_coalitions(key, counts: np.ndarray, samples: int) -> jax.Array:
    """``(samples, n, G)`` coalitions per example with `counts` ``(n,)`` groups each (``n`` = 1
    for a shared mask; ``G`` the most): a size drawn by Shapley kernel weight, then that many of
    the example's groups, uniformly."""
    groups = int(counts.max())
    cdf = _size_cdf(counts, groups).astype(np.float32)
    return _draw_coalitions(key, cdf, np.arange(groups) < counts[:, None], samples=samples)


@jax.jit
def _design_ranks(coalitions: jax.Array, counts: jax.Array) -> jax.Array:
    """The rank of the design the efficient fit solves, ``(z - z_last) * free`` (the weights of
    sampled coalitions are 1), for examples with `counts` ``(k,)`` groups and coalitions
    ``(samples, k, G)``: ``counts - 1`` when the fit is determined. Singular values are cut off
    as ``lstsq`` cuts them."""
    def one(z, count):
        z = z.astype(jnp.float32)
        free = (jnp.arange(z.shape[1]) < count - 1).astype(z.dtype)
        return jnp.linalg.matrix_rank((z - jnp.take(z, count - 1, axis=1)[:, None]) * free[None])

    return jax.vmap(one, in_axes=(1, 0))(coalitions, counts)


def _warn_underdetermined(coalitions: jax.Array, counts: np.ndarray, samples: int) -> None:
    """Warn where the drawn `coalitions` ``(samples, n, G)`` (examples with the same count of
    groups draw the same ones) leave an example's fit underdetermined: then its values are
    the least-norm fit, not a Shapley estimate. Examples whose budget enumerates their
    coalitions, and coalitions drawn from a traced key, are not checked."""
    kinds, first = np.unique(counts, return_index=True)
    keep = (kinds > 1) & (np.exp2(np.minimum(kinds, 64)) - 2 > samples)
    if not keep.any() or is_traced(coalitions):
        return
    kinds, first = kinds[keep], first[keep]
    ranks = np.asarray(_design_ranks(coalitions[:, first], jnp.asarray(kinds, jnp.int32)))
    short = np.flatnonzero(ranks < kinds - 1)
    if not short.size:
        return
    c, rank = int(kinds[short[-1]]), int(ranks[short[-1]])
    which = ("" if len(counts) == 1 else
             f" (for the {int(np.isin(counts, kinds[short]).sum())} of {len(counts)} examples "
             f"with {', '.join(map(str, kinds[short]))} groups; shown for {c})")
    warnings.warn(
        f"kernel_shap drew samples={samples} coalitions of {c} feature groups that determine "
        f"only {rank} of the {c - 1} values the fit solves for{which}: coalitions are drawn "
        "with replacement from the Shapley kernel, and near one per group they often repeat or "
        "are linearly dependent. The fit is underdetermined: its values are the least-norm "
        "fit, not Shapley estimates (wrong even on a linear model). Pass more samples (about "
        f"3 per group, samples >= {min(3 * c, 2 ** c - 2)}, gave no underdetermined draw in "
        "trials), or samples=None to enumerate (exact, up to 14 groups).",
        UserWarning, stacklevel=3)


def kernel_shap(f: Callable,
                x: Float[ArrayLike, "batch *feature"] | Int[ArrayLike, "batch *feature"],
                target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *, key=None,
                samples: int | None = None, baseline: ArrayLike | None = 0.0, feature_mask=None,
                batch_size: int | None = None) -> Float[Array, "batch *feature"]:
    """KernelSHAP: Shapley values as the weighted least-squares fit of a linear surrogate.

    The surrogate ``g(z) = f(b)_t + sum_j phi_j z_j`` over coalitions ``z`` of feature groups
    (groups on take `x`, off take the baseline) is fitted with the Shapley kernel weights
    ``(G - 1) / (C(G, |z|) |z| (G - |z|))`` under the efficiency constraint
    ``sum_j phi_j = f(x)_t - f(b)_t``. With every coalition enumerated the fit equals the exact
    Shapley values.

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``.
      x: the inputs, batch first; or integer codes (categories) of a model of them.
      target: the class to explain per example, shape ``(n,)``, or one int.
      key: a JAX PRNG key; required when `samples` is given.
      samples: None enumerates all ``2^G - 2`` coalitions (exact; G <= 14 groups); an int draws
        that many coalitions from the Shapley kernel (sizes by kernel weight, then uniform
        members, with replacement, as Captum's ``KernelShap``) and fits them with equal
        weights. At least G (fewer leave the fit underdetermined: a ValueError); near G the
        draws often repeat or are linearly dependent, and a draw that still leaves the fit
        underdetermined warns (a UserWarning, for a concrete `key` only; about 3 per group
        avoided it in trials); from
        ``2^G - 2`` on, every coalition is enumerated instead, as for None (exact, whatever
        `key`). With a mask per example, G is the most groups any example has (the model is
        evaluated ``2^G - 2`` times, or `samples` times, each over the batch), and an example
        whose own ``2^c - 2`` coalitions fit in `samples` is enumerated: exact, as alone.
      baseline: the value of an absent feature: a scalar or an array broadcastable to `x`
        (whole numbers for integer `x`), one per example or one for all. For a background of
        ``m`` reference inputs, average over it:
        ``jax.vmap(lambda b: kernel_shap(f, x, t, baseline=b))(background).mean(0)``
        (interventional SHAP: the attributions sum to ``f(x)_t - mean_b f(b)_t``; the same
        recipe serves every method that takes a `baseline`).
      feature_mask: integer group ids with one example's shape (or broadcastable to it), shared
        by the batch, or one mask per example with `x`'s number of axes (each example is
        fitted on the groups it has; a row gets what the example gets alone); None: every
        element is its own group.
      batch_size: the number of coalitions evaluated at once (None: all at once on GPU/TPU, on CPU
        as many as keep a pass in cache).

    Returns:
      An array shaped like `x`, in its dtype (float32 for integer codes); members of a group
      share its value.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxplain.attribution import kernel_shap
      >>> f = lambda x: x[:, :1] * x[:, 1:2] + x[:, 2:]
      >>> kernel_shap(f, jnp.array([[2.0, 3.0, 1.0]]), 0).round(4)
      Array([[3., 3., 1.]], dtype=float32)

    References:
      Lundberg, Lee. A Unified Approach to Interpreting Model Predictions. NeurIPS 2017.
    """
    x, t = _common.check_evaluating_arguments(f, x, target)
    b = _common.check_baseline(baseline, x, method="kernel_shap")
    mask, counts = own_groups(feature_mask, x)
    groups, each = int(counts.max()), mask.ndim == x.ndim  # the most of any example
    most = " (the most of any example)" if each else ""
    if samples is not None:
        key = check_key(key)
        samples = _common.check_positive_int(samples, "samples")
        if samples < groups:
            raise ValueError(
                f"kernel_shap with samples={samples} fits {groups} feature groups{most}: the fit "
                f"is underdetermined below samples={groups} (one coalition per group). Pass "
                f"samples >= {groups}, several times more for a stable estimate (2^G - 2 or more "
                "enumerates every coalition: exact), or samples=None to enumerate.")
    wide = _common.wide(x.dtype)
    if samples is None or samples >= 2 ** groups - 2:  # the budget covers every coalition
        if samples is None and groups > EXACT_LIMIT:
            raise ValueError(f"kernel_shap enumerates all coalitions when samples is None, which "
                             f"needs at most {EXACT_LIMIT} feature groups; got {groups}{most}. "
                             "Pass a coarser feature_mask, or samples=... and key=...")
        # an example with fewer groups sees the rest as null players: its values stay exact
        z, w = _all_coalitions(groups) if groups > 1 else (np.zeros((1, 1), bool), np.ones(1))
        coalitions, weights = jnp.asarray(z), jnp.asarray(w, wide)
    else:
        with jax.ensure_compile_time_eval():  # a concrete key draws concrete coalitions in a jit
            drawn = _sampled_coalitions(key, counts, samples)
            _warn_underdetermined(drawn, counts, samples)
        if not each:
            coalitions, weights = drawn[:, 0], jnp.ones((samples,), wide)
        else:  # an example whose budget covers its coalitions enumerates them, as alone
            coalitions, weights = _covered(drawn, counts, wide)
    return _kernel_shap(f, x, t, b, mask, coalitions, weights, jnp.asarray(counts, jnp.int32),
                        batch_size=_common.check_batch_size(batch_size))


_dot = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)  # no TF32 / bf16 passes


def _ridge(a, b, ridge):
    """``beta`` minimising ``|a @ beta - b|^2 + ridge |beta|^2`` (`a` ``(m, G)``, `b` ``(m, k)``;
    returns ``(G, k)``) through the thin SVD of `a` (``O(m G min(m, G))``, no Gram matrix to
    square the condition number): ``beta = V diag(s / (s^2 + ridge)) U^T b``. Singular values at
    or below ``max(m, G) eps`` of the largest are dropped, as ``lstsq`` drops them: with ridge 0
    and several exact fits, the least-norm ``beta``."""
    m, g = a.shape
    u, s, vt = jnp.linalg.svd(a, full_matrices=False)
    keep = s > jnp.finfo(a.dtype).eps * max(m, g) * s[:1]
    scale = jnp.where(keep, s / jnp.where(keep, s * s + ridge, 1.0), 0.0)[:, None]
    return _dot(vt.T, scale * _dot(u.T, b))


def _lime_fit(z, y, count, kernel_width, ridge):
    """Ridge fit of ``y ~ c + z @ beta`` weighted by ``k = exp(-d^2 / kernel_width^2)``, ``d`` the
    cosine distance of each coalition to the all-on one over `count` groups; the intercept ``c``
    is unpenalised, so it is taken out by centring `z` and `y` on their ``k``-weighted means.
    `z` ``(m, G)``, `y` ``(m, k)``; returns ``beta`` ``(G, k)``."""
    distance = 1.0 - jnp.sqrt(z.sum(axis=1) / count)
    k = jnp.exp(-(distance ** 2) / kernel_width ** 2)
    mean = lambda a: _dot(k / k.sum(), a)[None]
    root = jnp.sqrt(k)[:, None]
    return _ridge((z - mean(z)) * root, (y - mean(y)) * root, ridge)


@functools.partial(jax.jit, static_argnames=("f", "samples", "batch_size"))
def _lime(f, x, target, baseline, mask, key, present, kernel_width, ridge, *, samples,
          batch_size):
    dtype = ridge.dtype  # the fit's: float32 at least
    draws = _uniforms(key, samples, present.shape[1]).at[0].set(0.0)  # the input itself first
    z = draws < 0.5  # (samples, G): group k is each example's k-th
    y = _coalition_values(f, x, target, baseline, mask, z, batch_size).astype(dtype)
    on = present.astype(dtype)  # (1 or n, G): the groups each example has

    def fit(z, y, on, count):  # on: (1, G) shared, or (G,) of one example
        return _lime_fit(z * jnp.reshape(on, (1, -1)), y, count, kernel_width, ridge)

    coef = _per_example(fit, z.astype(dtype), y, on, on.sum(axis=1), each=mask.ndim == x.ndim)
    coef = jnp.where(present.T, coef, 0.0)
    return _common.spread(coef.astype(_common.result_dtype(x.dtype)), mask, x)


def lime(f: Callable, x: Float[ArrayLike, "batch *feature"] | Int[ArrayLike, "batch *feature"],
         target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *, key, samples: int = 200,
         baseline: ArrayLike | None = 0.0, feature_mask=None, kernel_width: float = 0.25,
         ridge: float = 1e-3, batch_size: int | None = None) -> Float[Array, "batch *feature"]:
    """LIME: the coefficients of a locally weighted linear surrogate on feature groups.

    Coalitions ``z`` are drawn with each group on with probability 1/2 (the first is all on),
    the model is evaluated with the groups that are off set to the baseline, and a ridge
    regression ``f_t ~ c + sum_j beta_j z_j`` is fitted with weights
    ``exp(-d(z, 1)^2 / kernel_width^2)``, ``d`` the cosine distance to the all-on coalition.

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``.
      x: the inputs, batch first; or integer codes (categories) of a model of them.
      target: the class to explain per example, shape ``(n,)``, or one int.
      key: a JAX PRNG key (required).
      samples: the number of coalitions.
      baseline: the value of an absent feature: a scalar or an array broadcastable to `x`
        (whole numbers for integer `x`); for a background of reference inputs, see
        :func:`kernel_shap`.
      feature_mask: integer group ids with one example's shape (or broadcastable to it), shared
        by the batch (superpixels), or one mask per example with `x`'s number of axes (each
        example is fitted on the groups it has, as alone); None: every element is its own group.
      kernel_width: the width of the exponential kernel, on distances in coalition space
        (``lime_image`` weights by ``sqrt(exp(-d^2 / 0.25^2))``: ``kernel_width=0.25·√2``).
      ridge: the L2 penalty on the coefficients (not the intercept). With 0 the least-squares
        fit, as ``lstsq`` gives it: where several fit equally well (fewer independent samples
        than groups), the coefficients of least norm.
      batch_size: the number of coalitions evaluated at once (None: all at once on GPU/TPU, on CPU
        as many as keep a pass in cache).

    Returns:
      An array shaped like `x`, in its dtype (float32 for integer codes): each element gets
      its group's coefficient.

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
    x, t = _common.check_evaluating_arguments(f, x, target)
    key = check_key(key)
    b = _common.check_baseline(baseline, x, method="lime")
    mask, counts = own_groups(feature_mask, x)
    for name, value, zero in (("kernel_width", kernel_width, False), ("ridge", ridge, True)):
        if not _common.is_traced(value) and (
                jnp.ndim(value) != 0 or not (float(value) > 0 or zero and float(value) == 0)):
            raise ValueError(f"{name} must be a float {'>=' if zero else '>'} 0; got {value!r}")
    return _lime(f, x, t, b, mask, key, jnp.asarray(np.arange(counts.max()) < counts[:, None]),
                 jnp.asarray(kernel_width, _common.wide(x.dtype)),
                 jnp.asarray(ridge, _common.wide(x.dtype)),
                 samples=_common.check_positive_int(samples, "samples", 2),
                 batch_size=_common.check_batch_size(batch_size))
