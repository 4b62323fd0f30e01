"""Pathway selection: one global percentile of the contributions per example, on device."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from jaxplain.core._user_line import user_stacklevel
from jaxplain.pathways import _checks, _contributions


def _flat(tree: Mapping) -> Array:
    first = next(iter(tree.values()))
    return jnp.concatenate([v.reshape(first.shape[0], -1) for v in tree.values()], axis=1)


def _sortable(values: Float[Array, "batch n"]) -> Array:
    """Unsigned integer keys with the order of ``values`` (negative floats reversed below
    positives): 64-bit for float64, else 32-bit (narrower floats are exact in float32)."""
    bits = 64 if values.dtype == jnp.float64 else 32
    u = jax.lax.bitcast_convert_type(values.astype(_FLOAT[bits]), _UINT[bits])
    sign = _UINT[bits](1 << (bits - 1))
    return jnp.where(u >= sign, ~u, u | sign)


def _unsortable(keys: Array) -> Array:
    bits = 8 * keys.dtype.itemsize
    sign = _UINT[bits](1 << (bits - 1))
    u = jnp.where(keys >= sign, keys & ~sign, ~keys)
    return jax.lax.bitcast_convert_type(u, _FLOAT[bits])


_FLOAT = {32: jnp.float32, 64: jnp.float64}
_UINT = {32: jnp.uint32, 64: jnp.uint64}


def _order_statistic(keys: Array, k: Int[Array, ""]) -> Array:
    """The k-th smallest key of every row (0-based), by bisection on the key space.

    32 (or 64) rounds of compare-and-count instead of a sort: O(32 n) vectorised work, which
    beats XLA's comparison sort on CPU by an order of magnitude and is exact.
    """

    def body(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        enough = (keys <= mid[:, None]).sum(axis=1, dtype=jnp.int32) >= k + 1
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    rows, bits = keys.shape[0], 8 * keys.dtype.itemsize
    lo = jnp.zeros(rows, keys.dtype)
    hi = jnp.full(rows, jnp.iinfo(keys.dtype).max, keys.dtype)
    return jax.lax.fori_loop(0, bits, body, (lo, hi))[0]


def _next_order_statistic(keys: Array, kth: Array, k: Int[Array, ""]) -> Array:
    """The (k+1)-th smallest key of every row, given the k-th ``kth``: ``kth`` itself when
    more than k + 1 keys are ``<= kth`` (a tie, or k the last index), else the smallest key
    above it; one pass."""
    column = kth[:, None]
    ties = (keys <= column).sum(axis=1, dtype=jnp.int32) >= jnp.minimum(k + 2, keys.shape[1])
    top = jnp.full((), jnp.iinfo(keys.dtype).max, keys.dtype)
    above = jnp.min(jnp.where(keys > column, keys, top), axis=1)
    return jnp.where(ties, kth, above)


class Position(NamedTuple):
    """Where ``numpy.percentile(row, q)`` falls in a sorted row of ``n`` values: the lower
    order statistic ``lo`` (0-based) and the interpolation weight ``w`` (with ``rest = 1 - w``),
    from the virtual index ``q / 100 * (n - 1)`` computed on the host in float64 exactly as
    NumPy does (:func:`position`). Passed to the compiled function as values, so every ``q``
    shares one program."""

    lo: int
    w: float
    rest: float


def position(n: int, q: float) -> Position:
    """The :class:`Position` of the ``q``-th percentile (a Python number) in rows of ``n``."""
    index = (q / 100.0) * (n - 1)
    lo = min(int(math.floor(index)), n - 1)
    w = index - lo
    return Position(lo, w, 1.0 - w)


def percentile_rows(values: Float[Array, "batch n"], at: Position) -> Float[Array, "batch"]:
    """``numpy.percentile(row, q)`` (linear interpolation) of every row, on device, for
    ``at = position(n, q)``.

    The lower order statistic is found exactly by bisection (no sort), the next one from it in
    one more pass, and the interpolation uses NumPy's two-sided formula with the weights
    computed on the host, so the result is NumPy's.
    """
    keys = _sortable(values)
    a_key = _order_statistic(keys, at.lo)
    a = _unsortable(a_key)
    b = _unsortable(_next_order_statistic(keys, a_key, at.lo))
    diff = b - a
    return jnp.where(at.w == 0.0, a,
                     jnp.where(at.w < 0.5, a + diff * at.w, b - diff * at.rest))


class Cut(NamedTuple):
    """A pathway threshold as values for the compiled function: keep every unit (``keep=1``),
    else the units above the percentile at ``position``."""

    keep_all: bool
    position: Position


def cut(keep: float, n: int) -> Cut:
    """The :class:`Cut` of ``keep`` (a checked Python float) over ``n`` units per example."""
    return Cut(keep >= 1.0, position(n, 100.0 * (1.0 - keep)))


def units(shapes) -> int:
    """The number of units per example of sites of ``shapes`` (batch first), pooled."""
    return sum(math.prod(shape[1:]) for shape in shapes)


def threshold_scores(scores: Mapping, at: Cut) -> dict:
    """Traced body of :func:`threshold`, for ``at = cut(keep, units)``."""
    tau = percentile_rows(_flat(scores), at.position)
    return {n: at.keep_all | (v > tau.reshape((-1,) + (1,) * (v.ndim - 1)))
            for n, v in scores.items()}


def empty_rows(masks: Mapping) -> Int[Array, ""]:
    """How many examples keep no unit of any site of ``masks``."""
    return jnp.sum(~jnp.any(_flat(masks), axis=1), dtype=jnp.int32)


@jax.jit
def _threshold(scores, at):
    masks = threshold_scores(scores, at)
    return masks, empty_rows(masks)


def warn_if_empty(empty: Int[Array, ""], batch: int, keep: float) -> None:
    """Warns (once per call) when ``empty`` (from :func:`empty_rows`) examples of ``batch``
    kept no unit; a traced count (inside the user's ``jit``) is not checked."""
    if isinstance(empty, jax.core.Tracer):
        return
    empty = int(empty)
    if empty:
        warnings.warn(
            f"keep={keep:g} kept no unit for {empty} of {batch} examples: a unit is kept only "
            f"when its score is strictly above the example's {100 * (1 - keep):g}th percentile, "
            "and there the largest scores all tie at it (e.g. learned gates that all decayed "
            "alike, as with saturated logits: learn them with more steps or a larger "
            "learning_rate; or every score 0). Their pathway is empty and their "
            "masked_gradient is 0; see kept_fraction.", UserWarning,
            stacklevel=user_stacklevel())


def threshold(scores: Mapping[str, Float[ArrayLike, "batch *site"]], *, keep: float) -> dict:
    """Binary pathway masks from per-unit scores: one global percentile per example.

    ``tau = numpy.percentile(all scores of the example, 100 * (1 - keep))`` over every unit of
    every site pooled (no per-layer quota); a unit is kept iff its score is ``> tau``. Because
    the comparison is strict, every zero score (dead units, units with zero gradient) and every
    tie at ``tau`` is dropped, so the kept fraction can be below ``keep`` — or above ``1 - p``
    of the non-zero units; see :func:`kept_fraction`. ``keep=1`` keeps every unit (the
    unmasked network), so that the pathway gradient then equals the plain gradient exactly.

    Args:
      scores: ``{site: scores (batch, ...)}`` from :func:`contributions`,
        :func:`integrated_contributions`, or learned gates.
      keep: the fraction to keep, in (0, 1]; a Python float (its percentile's position is
        computed on the host and passed as a value: a new ``keep`` does not recompile).

    Returns:
      ``{site: bool mask}`` shaped like the scores.
    """
    keep = _checks.check_keep(keep)
    _checks.check_masks(scores)
    scores = dict(scores)
    masks, empty = _threshold(scores, cut(keep, units(jnp.shape(v) for v in scores.values())))
    warn_if_empty(empty, jnp.shape(next(iter(masks.values())))[0], keep)
    return _checks.in_order(masks, scores)


def pathway_masks(f, x, t, specs, at, method, steps, batch_size) -> dict:
    """Traced body of :func:`select`, for targets `t` already resolved
    (:func:`_checks.targets`) and ``at = cut(keep, units)``: the contributions by `method`,
    then :func:`threshold_scores`."""
    if method == "taylor":
        scores = _contributions.taylor_scores(f, x, t, specs)
    else:
        scores = _contributions.integrated_scores(f, x, t, specs, steps, batch_size)
    return threshold_scores(scores, at)


@functools.partial(jax.jit, static_argnames=("f", "specs", "method", "steps", "batch_size"))
def _select(f, x, target, specs, at, method, steps, batch_size):
    t = _checks.targets(f, x, target)
    masks = pathway_masks(f, x, t, specs, at, method, steps, batch_size)
    return masks, empty_rows(masks)


def check_method(method: str, steps: int) -> None:
    if method not in ("taylor", "integrated"):
        raise ValueError(f"method must be 'taylor' or 'integrated'; got {method!r}.")
    _checks.check_positive_int(steps, "steps")


def select_arguments(f, x, target, *, keep, sites, method, steps, batch_size) -> tuple:
    """The checks of :func:`select` and :func:`pathway_gradient`, before tracing: ``(x,
    target, specs, at, batch_size)``, with ``at`` the :class:`Cut` of `keep` and `batch_size`
    None unless ``method="integrated"`` uses it (one compiled function whatever its value)."""
    _checks.check_function(f)
    x = _checks.check_x(x)
    keep = _checks.check_keep(keep)
    check_method(method, steps)
    batch_size = _contributions.check_batch_size(batch_size)
    if method != "integrated":
        batch_size = None
    specs, n_classes = _checks.resolve(f, x, sites)
    target = _checks.check_target(target, x.shape[0], n_classes)
    return x, target, specs, cut(keep, units(shape for _, shape, _ in specs)), batch_size


def select(
    f: Callable, x: Float[ArrayLike, "batch *features"], target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""] | None,
    *, keep: float, sites=None, method: str = "taylor", steps: int = 10,
    batch_size: int | None = _contributions.DEFAULT_BATCH_SIZE,
) -> dict[str, Bool[Array, "batch *site"]]:
    """Critical-pathway masks for each example: contributions, then one global percentile.

    Scores every unit of every selected site with :func:`contributions` (``method="taylor"``,
    the paper's NeuronMCT) or :func:`integrated_contributions` (``method="integrated"``,
    NeuronIntGrad with ``steps``), then keeps, per example, the units whose score is strictly
    above the ``100 * (1 - keep)``-th percentile of all units of all sites (NumPy's linear
    interpolation, computed on device). Dead units always drop.

    Args:
      f: model function, batch in, logits ``(batch, classes)`` out.
      x: input batch ``(batch, ...)``.
      target: class per example (int or ``(batch,)``); ``None``: the predicted class.
      keep: kept fraction in (0, 1] (``keep=0.2`` is the paper's sparsity ``p = 80``).
      sites: ``None`` for every relu, relu6, leaky_relu and hard_tanh activation, or a
        selector of ``jaxplain.core.select``.
      method: ``"taylor"`` or ``"integrated"``.
      steps: IG intervals for ``method="integrated"``.
      batch_size: for ``method="integrated"``, how many of the ``steps + 1`` IG steps are
        evaluated at once (``None``: all at once on GPU/TPU, on CPU as many as keep a pass in
        cache); see :func:`integrated_contributions`.

    Returns:
      ``{site: bool mask}``, each shaped like the site's value for this batch.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain import pathways
      >>> f = lambda x: jax.nn.relu(x) @ jnp.array([[1.0, 0.0], [3.0, 1.0]])  # scores (2, 3)
      >>> masks = pathways.select(f, jnp.array([[2.0, 1.0]]), 0, keep=0.5)  # tau = 2.5
      >>> masks["relu"].tolist(), pathways.kept_fraction(masks).tolist()
      ([[False, True]], [0.5])

    References:
      Khakzar et al., CVPR 2021.
    """
    x, target, specs, at, batch_size = select_arguments(
        f, x, target, keep=keep, sites=sites, method=method, steps=steps, batch_size=batch_size)
    masks, empty = _select(f, x, target, specs, at, method, steps, batch_size)
    warn_if_empty(empty, x.shape[0], _checks.check_keep(keep))
    return _checks.in_order(masks, [n for n, *_ in specs])


def kept_fraction(masks: Mapping[str, Bool[ArrayLike, "batch *site"]]) -> Float[Array, "batch"]:
    """Fraction of units kept per example, over all sites of ``masks`` pooled.

    For one site's fraction pass a one-entry dict: ``kept_fraction({name: masks[name]})``.
    """
    return _flat(_checks.check_masks(masks)).astype(jnp.float32).mean(axis=1)
