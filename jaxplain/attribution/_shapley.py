"""Shapley value sampling: average marginal contributions over random feature orderings."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.attribution import _common
from jaxplain.attribution._surrogate import on_groups, own_groups
from jaxplain.core._keys import check_key


def _ranks(key, samples: int, groups: int, counts: jax.Array | None) -> jax.Array:
    """The position of each group in `samples` random orderings: ``(samples, G)`` for a mask
    shared by the batch (`counts` None); ``(samples, n, G)`` for examples with `counts` ``(n,)``
    groups each, ordered by random keys per group (group g's drawn from ``fold_in(key, g)``:
    an example's orderings depend on its own groups only), groups past its own placed last."""
    if counts is None:
        keys = jax.random.split(key, samples)
        return jnp.argsort(jax.vmap(lambda k: jax.random.permutation(k, groups))(keys), axis=1)
    column = lambda g: jax.random.bits(jax.random.fold_in(key, g), (samples,), jnp.uint32)
    draws = jax.vmap(column, out_axes=1)(jnp.arange(groups))[:, None]  # (samples, 1, G)
    own = (jnp.arange(groups)[None] < counts[:, None])[None]  # (1, n, G)
    draws = jnp.where(own, draws, jnp.uint32(2 ** 32 - 1))  # ties: the lower group first
    return jnp.argsort(jnp.argsort(draws, axis=-1, stable=True), axis=-1)


@functools.partial(jax.jit, static_argnames=("f", "groups", "samples", "batch_size"))
def _shapley_sampling(f, x, target, baseline, mask, counts, key, *, groups, samples, batch_size):
    # ranks[s, [i,] g]: the position of group g in the s-th ordering (of example i, for a mask
    # per example: counts[i] groups of its own)
    ranks = _ranks(key, samples, groups, counts if mask.ndim == x.ndim else None)
    ranks = ranks.astype(jnp.int32)  # (samples, [n,] groups)

    def inputs(chunk):  # (c,) orderings and prefix lengths -> (n, c, ...) inputs
        s, k = chunk
        present = jax.vmap(lambda si, ki: on_groups(ranks[si], mask) < ki)(s, k)  # (c, [n,] ...)
        present = present[None] if present.ndim == x.ndim else jnp.moveaxis(present, 0, 1)
        return jnp.where(present, x[:, None], baseline[:, None])

    # v[s, k]: f_t with the first k groups of ordering s taken from x; k = 0 (the baseline) and
    # k >= the example's groups (x) are the same in every ordering, evaluated once
    ends = [_common.widen(_common.selected(f, z, target))[None] for z in (baseline, x)]
    if groups > 1:
        s_idx, k_idx = jnp.meshgrid(jnp.arange(samples), jnp.arange(1, groups), indexing="ij")
        items = (s_idx.reshape(-1), k_idx.reshape(-1))
        middle = _common.widen(_common.folded_values(f, x, target, inputs, items, batch_size))
        values = jnp.concatenate([jnp.broadcast_to(ends[0], (samples, 1, x.shape[0])),
                                  middle.reshape(samples, groups - 1, -1),
                                  jnp.broadcast_to(ends[1], (samples, 1, x.shape[0]))], axis=1)
        values = jnp.where((jnp.arange(groups + 1)[:, None] < counts[None])[None], values,
                           ends[1][None])
    else:
        values = jnp.concatenate(ends)[None]
    # contribution of group g in ordering s: v[s, rank + 1] - v[s, rank]; 0 past an example's
    # own groups (both ends at x)
    ranks = ranks[:, :, None] if ranks.ndim == 2 else jnp.swapaxes(ranks, 1, 2)  # (s, G, n|1)
    after = jnp.take_along_axis(values, ranks + 1, axis=1)
    before = jnp.take_along_axis(values, ranks, axis=1)
    phi = (after - before).mean(axis=0)  # (groups, n)
    # an example whose target is not finite at some coalition (inf - inf is NaN, inf - v is
    # not): NaN throughout, as every method gives it
    phi = jnp.where(jnp.isfinite(values).all(axis=(0, 1))[None], phi, jnp.nan)
    return _common.spread(phi, mask, x).astype(_common.result_dtype(x.dtype))


def shapley_sampling(f: Callable,
                     x: Float[ArrayLike, "batch *feature"] | Int[ArrayLike, "batch *feature"],
                     target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *, key,
                     samples: int = 25, baseline: ArrayLike | None = 0.0, feature_mask=None,
                     batch_size: int | None = None) -> Float[Array, "batch *feature"]:
    """Shapley values estimated by sampling feature orderings.

    For each of `samples` random orderings of the feature groups (shared by the batch; with a
    mask per example, each example orders its own groups), the groups are switched from the
    baseline to the input one at a time and each gets the change of ``f_t`` at its switch; the
    estimate is the mean over orderings. Every ordering adds up to ``f(x)_t - f(b)_t`` exactly
    (efficiency), as Captum's ``ShapleyValueSampling`` does.

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``.
      x: the inputs, batch first; or integer codes (categories) of a model of them.
      target: the class to explain per example, shape ``(n,)``, or one int.
      key: a JAX PRNG key (required).
      samples: the number of random orderings.
      baseline: the value of an absent feature: a scalar or an array broadcastable to `x`
        (whole numbers for integer `x`); for a background of reference inputs, see
        :func:`kernel_shap`.
      feature_mask: integer group ids with one example's shape (or broadcastable to it), shared
        by the batch, or one mask per example with `x`'s number of axes (each example's
        orderings are drawn over its own groups, from a random key per group: a row gets what
        the example gets alone with its own mask, though not the draws of a shared mask);
        None: every element is its own group. Members of a group share its value.
      batch_size: the number of model evaluations (each over the whole batch) run at once;
        there are ``samples * (groups - 1)`` (with a mask per example, ``groups`` is the most
        any example has), and two more (at the baseline and at `x`, shared by the orderings).
        None: all at once on GPU/TPU, on CPU as many as keep a pass in cache.

    Returns:
      An array shaped like `x`, in its dtype (float32 for integer codes; the changes are
      averaged in float32 at least); NaN throughout an example whose target output is not
      finite at some input evaluated (`x`, the baseline or a coalition).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import shapley_sampling
      >>> f = lambda x: x[:, :1] * x[:, 1:]                 # a pure interaction: 3 and 3
      >>> phi = shapley_sampling(f, jnp.array([[2.0, 3.0]]), 0, key=jax.random.key(0), samples=64)
      >>> float(phi.sum())                                  # f(x) - f(0), exactly
      6.0

    References:
      Strumbelj, Kononenko. An efficient explanation of individual classifications using game
      theory. JMLR 2010; Castro, Gomez, Tejada. Polynomial calculation of the Shapley value
      based on sampling. Computers & Operations Research 2009.
    """
    x, t = _common.check_evaluating_arguments(f, x, target)
    key = check_key(key)
    b = _common.check_baseline(baseline, x, method="shapley_sampling")
    mask, counts = own_groups(feature_mask, x)
    return _shapley_sampling(f, x, t, b, mask, jnp.asarray(counts, jnp.int32), key,
                             groups=int(counts.max()),
                             samples=_common.check_positive_int(samples, "samples"),
                             batch_size=_common.check_batch_size(batch_size))
