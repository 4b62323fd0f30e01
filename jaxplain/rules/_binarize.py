"""From activations to items: binarize dense units, conv filters, or conv (filter, position)s.

An activation with more than one axis per sample is a **map**: ``(n, length, c)`` (a 1-D conv
or a sequence of token features), ``(n, h, w, c)`` (a 2-D conv), any ``(n, *positions, c)``,
channels last as :func:`jaxplain.capture` presents sites. A map's items are its channels
(filter mode, pooled over the positions) or its (position, channel)s (locality mode), never
one item per flattened value. The rule is the value's rank, not the op that made it: the
site metadata cannot tell a ReLU after a 1-D conv from one after a token-wise dense layer,
and a unit applied at every position is a 1 x 1 convolution either way.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxplain.rules._kernel import fetch_ahead


class _Fields(NamedTuple):
    items: np.ndarray
    thresholds: np.ndarray
    shape: tuple


class Binarized(_Fields):
    """Boolean items with the thresholds that made them.

    Attributes:
      items: bool ``(n, d)``; rows are samples, columns are items.
      thresholds: float ``(d,)``; item i is on iff its (pooled) activation > thresholds[i].
      shape: the per-sample item layout: ``(units,)``, ``(channels,)`` in filter mode, or
        the map's ``(*positions, channels)`` in locality mode (``(length, channels)`` or
        ``(height, width, channels)``; items are that array flattened).
      pool: ``"max"`` or ``"mean"``, how the map of filter-mode items was pooled (so that
        ``thresholds_from=`` can refuse another pool); None for dense and locality items
        (nothing pooled), and when unknown (a ``Binarized`` built with three fields). Not a
        tuple field: a ``Binarized`` unpacks as ``items, thresholds, shape``.
    """

    pool = None   # what NamedTuple._make (which skips __new__) leaves: unknown

    def __new__(cls, items, thresholds, shape, pool=None):
        self = super().__new__(cls, items, thresholds, shape)
        self.pool = pool
        return self

    def _replace(self, **fields):
        return Binarized(*super()._replace(**fields), pool=self.pool)


def layer_items(name, value) -> np.ndarray:
    """One layer as given to ``mine`` or ``rule_rows``, as an array: a ``Binarized``'s
    ``items`` (bool ``(n, d)``), or ``value`` itself.

    Raises:
      TypeError: ``value`` cannot be one array (a sequence of arrays of different shapes), or
        is traced (inside the user's jit, vmap or grad).
    """
    if isinstance(value, Binarized):
        value = value.items
    try:
        return _host(f"layer {name!r}", value)
    except ValueError:   # NumPy: "setting an array element with a sequence ..."
        raise TypeError(f"layer {name!r} must be a bool (n, d) array or a Binarized (as "
                        f"binarize and activations return), got a {type(value).__name__} "
                        f"that is not one array") from None


#: Float64 bytes of activations thresholded at once: a block of columns, so that the float64
#: copies the quantiles need stay a bounded size whatever the number of rows.
_BLOCK_BYTES = 1 << 26


def _thresholded(acts: np.ndarray, threshold, q) -> tuple[np.ndarray, np.ndarray]:
    """``(acts > t, t)`` for 2-D ``acts`` with ``t`` the per-column ``q`` quantile, or
    ``threshold`` (default 0) broadcast over the columns when ``q`` is None; compared in
    float64, a block of columns at a time (:data:`_BLOCK_BYTES`)."""
    if q is not None:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        thresholds = np.empty(acts.shape[1:], np.float64)
    else:
        threshold = 0.0 if threshold is None else threshold
        try:
            thresholds = np.broadcast_to(np.asarray(threshold, np.float64), acts.shape[1:]).copy()
        except ValueError:
            raise ValueError(f"threshold must be a scalar or one value per item ({acts.shape[1]}"
                             f" items), got shape {np.shape(threshold)}") from None
    items = np.empty(acts.shape, bool)
    step = max(1, _BLOCK_BYTES // (8 * max(1, acts.shape[0])))
    for start in range(0, acts.shape[1], step):
        columns = slice(start, start + step)
        block = acts[:, columns].astype(np.float64)
        if q is not None:
            thresholds[columns] = _quantile_thresholds(block, q)
        items[:, columns] = block > thresholds[columns]
    return items, thresholds


def _quantile_thresholds(acts: np.ndarray, q: float) -> np.ndarray:
    """The per-column `q` quantile of float64 ``(n, d)`` `acts`, adjusted.

    A quantile that ties with its column's maximum (the column reaches its top value in more
    than ``1 - q`` of the rows, as saturating or quantized activations do) would switch the
    item off everywhere; its threshold is the next lower value of the column instead, so the
    item is on where the column is at its maximum. A quantile threshold that then equals the
    value of exactly one row moves halfway to the column's next larger value (see
    :func:`_off_the_rows`)."""
    thresholds = np.quantile(acts, q, axis=0)
    top = acts.max(axis=0)
    tied = np.flatnonzero(thresholds >= top)
    if tied.size:
        column = acts[:, tied]
        below = np.where(column < top[tied], column, -np.inf).max(axis=0)
        thresholds[tied] = np.where(below > -np.inf, below, thresholds[tied])  # constant
    return _off_the_rows(acts, thresholds)


def _off_the_rows(acts: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Thresholds ``(d,)`` of ``(n, d)`` `acts`, each that equals the value of exactly one row
    (a quantile on an order statistic: ``q (n - 1)`` whole) moved to the midpoint of that value
    and the column's next larger one. The items on `acts` are the same, but that row's item no
    longer flips when its activation is recomputed a last bit higher (another batch size). A
    value several rows share (ReLU's 0, a saturated maximum) is reproduced exactly: it stays."""
    above = np.where(acts > thresholds, acts, np.inf).min(axis=0)
    move = ((acts == thresholds).sum(axis=0) == 1) & np.isfinite(above)
    return np.where(move, thresholds + (above - thresholds) / 2, thresholds)


def _warn_constant(items: np.ndarray, values: np.ndarray, name) -> None:
    """Warn (at the caller's caller) when items of bool ``(n, d)`` ``items`` are on in no row
    or in every row although their ``(n, d)`` ``values`` vary: the threshold, not the data,
    made them constant (a dead unit, constant over the data, is not warned about); ``name``
    is the site, or None."""
    off, on = ~items.any(axis=0), items.all(axis=0)
    varies = (values != values[:1]).any(axis=0)    # any dtype (integer activations too)
    never, always = int((off & varies).sum()), int((on & varies).sum())
    if never + always == 0:
        return
    where = "the activations" if name is None else f"site {name!r}"
    count = (f"all {items.shape[1]}" if never + always == items.shape[1]
             else f"{never + always} of the {items.shape[1]}")
    warnings.warn(
        f"{count} items of {where} vary over the {items.shape[0]} samples but are constant "
        f"after thresholding ({never} never on, {always} always on); mine drops constant "
        f"items, so no rule can use them. Lower threshold= (or quantile=, conv_quantile=) for "
        f"items never on, raise it for items always on.",
        UserWarning, stacklevel=3)


def _concrete(name: str, value):
    """`value` where it is if it is a JAX array, else as a NumPy array; TypeError for a traced
    one (binarizing and mining run on the host, over the whole data set: they cannot run
    inside ``jit``)."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"{name} must be a concrete array: rule mining binarizes and searches on "
                        "the host, so it cannot run inside jit, vmap or grad; got a traced value. "
                        "Call it outside your transformation.")
    return value if isinstance(value, jax.Array) else np.asarray(value)


def _host(name: str, value) -> np.ndarray:
    """`value` as a NumPy array; TypeError for a traced one (see :func:`_concrete`)."""
    return np.asarray(_concrete(name, value))


def _widened(value):
    """``value`` (NumPy or JAX) in float32 if it is a float narrower than 32 bits (bfloat16,
    float16), so that pooling and thresholds are computed in float32 or wider; else itself."""
    if jnp.issubdtype(value.dtype, jnp.floating) and value.dtype.itemsize < 4:
        return value.astype(np.float32)
    return value


def _finite(values: np.ndarray, name) -> None:
    """ValueError naming the NaN and infinite values of ``values`` (of site ``name``, or of
    ``acts`` when None): a NaN has no order, and an infinite value breaks a quantile."""
    nan, inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
    if nan or inf:
        where = "acts" if name is None else f"site {name!r}"
        raise ValueError(f"{where} contains {nan} NaN and {inf} infinite values; binarize "
                         f"needs finite activations (an infinite value makes a quantile "
                         f"threshold NaN, and its item is on in no sample)")


def binarize(acts, *, threshold=None, quantile=None, conv_mode="filter", pool="max",
             conv_quantile: float | None = 0.9, channel_axis=-1) -> Binarized:
    """Turn activations into boolean items, one threshold per item.

    Dense ``(n, d)`` activations: item i is on iff ``a_i > threshold`` (default 0, i.e. ReLU
    active), or above its own ``quantile`` over the data when ``quantile`` is given.
    Conv maps ``(n, *positions, c)`` -- ``(n, length, c)`` for a 1-D conv or a sequence of
    token features, ``(n, h, w, c)`` for a 2-D conv -- are read channels-last (pass
    ``channel_axis=1`` for the ``(n, c, *positions)`` maps of a channels-first model, which
    are read as their channels-last transpose):

    - ``conv_mode="filter"``: one item per filter; the map is pooled over its positions
      (``pool`` "max" or "mean") and the filter is on iff the pooled value exceeds the
      filter's ``conv_quantile`` over the data (default 0.9: on in about the top 10% of
      samples). When that quantile ties with the filter's maximum (it reaches its top value
      in more than 10% of the samples: saturating or quantized activations), ``>`` would
      switch it off everywhere, so its threshold is the next lower value it takes instead:
      it is on where it reaches its maximum (in more than 10% of the samples). A quantile
      threshold that equals the value of exactly one sample (``np.quantile`` gives the k-th
      smallest value itself when ``q (n - 1)`` is a whole number k) is the midpoint of that
      value and the next larger one instead: the same items, but a recomputation a last bit
      off (another ``batch_size``) does not flip that sample; a value several samples share
      (ReLU's 0) stays. Both hold for every quantile threshold, dense ``quantile=`` too.
    - ``conv_mode="locality"``: one item per (position, filter), thresholded the same way per
      item, so rules can show where a filter is expected to fire; items are ordered as the
      flattened ``(*positions, c)`` map (``(length, c)`` or ``(h, w, c)``).

    Conv maps take their quantile from ``conv_quantile``, never from ``quantile`` (which is for
    dense activations, and raises for a conv map); ``conv_quantile=None`` thresholds conv items
    at ``threshold`` instead. To binarize held-out data with the thresholds of a training
    binarization ``train``, pass ``threshold=train.thresholds`` (with ``conv_quantile=None``,
    the same ``conv_mode`` and ``pool`` for a conv map).

    Args:
      acts: ``(n, d)`` dense or ``(n, *positions, c)`` conv-map activations
        (``(n, length, c)``, ``(n, h, w, c)``) over a data set: floats or integers (e.g.
        quantized), finite; floats narrower than 32 bits (bfloat16) are pooled and
        thresholded in float32.
      threshold: a scalar or one value per item (default 0); not combined with a quantile.
      quantile: dense activations only: each unit's threshold is this quantile over the data.
      conv_mode, pool, conv_quantile: conv maps only, as above.
      channel_axis: the axis of ``acts`` that holds the filters of a conv map (``-1`` or
        ``acts.ndim - 1`` for channels-last, ``1`` for channels-first). Activations captured
        with :func:`jaxplain.capture` or :func:`activations` are already channels-last,
        whatever the model's layout.

    Returns:
      ``Binarized(items, thresholds, shape)``. A ``UserWarning`` gives the number of items
      whose values vary but that the threshold makes constant (on in no sample, or in every
      one): ``mine`` drops those.

    Raises:
      TypeError: ``acts`` is not numeric (floats, bfloat16 included, and integers are).
      ValueError: NaN or infinite values in ``acts``, ``quantile`` for a conv map,
        ``threshold`` for a conv map while ``conv_quantile`` is set, or both ``threshold`` and
        ``quantile`` for dense activations.

    Example:
      >>> items, thresholds, _ = binarize(np.array([[0.0, 2.0], [1.0, 0.0]]))
      >>> items.tolist()
      [[False, True], [True, False]]
    """
    acts = _host("acts", acts)
    if not (jnp.issubdtype(acts.dtype, jnp.floating) or jnp.issubdtype(acts.dtype, jnp.integer)):
        raise TypeError(f"acts must be a numeric array, got dtype {acts.dtype}")
    if acts.ndim < 2 or acts.shape[0] == 0:
        raise ValueError(f"acts must be (n, d) dense or (n, *positions, c) conv-map activations "
                         f"(e.g. (n, length, c) or (n, h, w, c)) with n > 0, got shape "
                         f"{acts.shape}")
    acts = _widened(acts)
    _finite(acts, None)
    if conv_mode not in ("filter", "locality"):
        raise ValueError(f"conv_mode must be 'filter' or 'locality', got {conv_mode!r}")
    if pool not in ("max", "mean"):
        raise ValueError(f"pool must be 'max' or 'mean', got {pool!r}")
    if acts.ndim == 2:
        if threshold is not None and quantile is not None:
            raise ValueError(f"pass either threshold= or quantile=, not both (got threshold="
                             f"{threshold!r}, quantile={quantile!r})")
        items, thresholds = _thresholded(acts, threshold, quantile)
        _warn_constant(items, acts, None)
        return Binarized(items, thresholds, tuple(acts.shape[1:]))
    if quantile is not None:
        raise ValueError(
            f"quantile={quantile!r} applies to dense (n, d) activations; a conv map of shape "
            f"{acts.shape} is thresholded per item at conv_quantile= (now {conv_quantile!r}): "
            f"pass conv_quantile={quantile!r} instead.")
    if threshold is not None and conv_quantile is not None:
        raise ValueError(
            f"threshold= is used for a conv map only with conv_quantile=None (now conv_quantile="
            f"{conv_quantile!r}, which would set the thresholds instead): pass "
            f"conv_quantile=None to threshold the conv items at threshold=.")
    last = acts.ndim - 1
    if not isinstance(channel_axis, (int, np.integer)) or channel_axis not in (1, -last, last,
                                                                                -1):
        raise ValueError(f"channel_axis must be 1 (channels first) or -1 (channels last) for "
                         f"conv activations of shape {acts.shape}, got {channel_axis!r}")
    acts = np.moveaxis(acts, channel_axis, -1)
    shape = acts.shape[1:] if conv_mode == "locality" else acts.shape[-1:]
    values = _map_items(acts, conv_mode == "locality", pool)
    items, thresholds = _thresholded(values, threshold, conv_quantile)
    _warn_constant(items, values, None)
    return Binarized(items, thresholds, tuple(shape), None if conv_mode == "locality" else pool)


def _map_items(acts, local: bool, pool: str):
    """A channels-last map ``(n, *positions, c)`` as 2-D items: pooled over the positions to
    ``(n, c)`` (filter mode), or flattened to ``(n, positions x c)`` (locality mode). Works
    on NumPy and JAX arrays."""
    if local:
        return acts.reshape(acts.shape[0], -1)
    positions = tuple(range(1, acts.ndim - 1))
    return acts.max(axis=positions) if pool == "max" else acts.mean(axis=positions)


def _resolve_sites(f, x, sites, locality) -> tuple[list[str], set[str]]:
    """The site names that ``sites`` selects (a sequence in its own order, each glob's matches
    in program order) and those of them that ``locality`` selects."""
    from jaxplain.core import select
    from jaxplain.core import sites as model_sites
    from jaxplain.core._capture import batch_lost_at

    known = model_sites(f, x)
    if isinstance(sites, str) or callable(sites):
        names = list(select(known, sites))
    else:
        names = []
        for pattern in sites:
            if not isinstance(pattern, str):
                raise TypeError(f"sites must be a site name, a glob, a sequence of them or a "
                                f"predicate (name, site) -> bool; got the element {pattern!r}")
            names += [n for n in select(known, pattern) if n not in names]
    if not names:
        raise ValueError(f"sites {sites!r} selects no site")
    shapes = {s.name: tuple(s.shape) for s in known}
    for name in names:
        if shapes[name][:1] != x.shape[:1]:
            cause, fix = batch_lost_at(f, x, name)
            raise ValueError(
                f"site {name!r} has shape {shapes[name]}, whose first axis is not the batch of "
                f"{x.shape[0]}: the kernel lost the batch axis of its value on the way from x "
                f"(after {cause}), so its rows are not examples. {fix[0].upper()}{fix[1:]}; or "
                "select other sites.")
    if isinstance(locality, str) or callable(locality) or len(locality):
        local = set(select(known, locality))
        unknown = sorted(local - set(names))
        if unknown:
            raise ValueError(f"locality selects {unknown}, which are not among the selected "
                             f"sites {names}")
    else:
        local = set()
    return names, local


def activations(f, x, sites, *, batch_size=256, threshold=None, quantile=None,
                conv_quantile=0.9, pool="max", locality=(), thresholds_from=None):
    """Capture activations at ``sites`` over a data set in batches and binarize each site.

    A site whose value has more than one axis per sample is a conv map, channels last as
    :func:`jaxplain.capture` presents it: ``(n, length, c)`` (a 1-D conv, or token features of
    a sequence model) or ``(n, h, w, c)``. Conv sites are pooled over their positions per
    batch (filter mode: one item per channel), so memory stays bounded; sites named in
    ``locality`` keep every (position, filter) item. Thresholds follow ``binarize``: dense
    sites use ``threshold`` or ``quantile``, conv sites ``conv_quantile`` (or ``threshold``
    when it is None). With ``thresholds_from`` (the result of an earlier call, e.g. on the
    training data) each site reuses those thresholds instead of computing new ones, so
    held-out data is binarized exactly as the data the rules were mined on.

    Args:
      f: the model function ``x -> logits``.
      x: inputs ``(n, ...)``.
      sites: which sites, in the selection language of :func:`jaxplain.capture`: a name, a
        glob (``"block2/*"``), a sequence of them (in the order the layers should be mined;
        a glob's matches in program order), or a predicate ``(name, site) -> bool``.
      batch_size: samples per forward pass; ``None``: all of ``x`` in one pass.
      threshold, quantile, conv_quantile, pool: as in ``binarize``.
      locality: the sites binarized with ``conv_mode="locality"`` (same selection forms).
      thresholds_from: ``{site: Binarized}`` from an earlier call with the same ``pool`` and
        ``locality`` (another one raises); every selected site must be in it. Not combined
        with ``threshold``, ``quantile`` or ``conv_quantile``.

    Returns:
      ``{site: Binarized}`` for every selected site, in selection order; ``mine`` and
      ``rule_rows`` take it as it is. A ``UserWarning`` names each site with items that
      vary but are constant after thresholding, and their number.

    Raises:
      ValueError: a ``batch_size`` that is not None or an int >= 1, a selector that picks no
        site (with close matches), a site whose first axis is not the batch, ``locality`` outside
        ``sites``, ``quantile`` when every site is a conv map (use ``conv_quantile``), a site
        with NaN or infinite values, or ``thresholds_from`` without a site, with another item
        shape (another ``locality``) or of another ``pool``.

    Example:
      >>> train = activations(f, digits.x_train, ["block1/relu_1", "relu_1"])   # doctest: +SKIP
      >>> rules = mine(train)                                                    # doctest: +SKIP
      >>> test = activations(f, digits.x_test, list(train), thresholds_from=train)  # doctest: +SKIP
    """
    from jaxplain.core import capture

    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(
            batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(f"batch_size must be None (all samples in one forward pass) or an int "
                         f">= 1 (samples per forward pass), got {batch_size!r}")
    if pool not in ("max", "mean"):
        raise ValueError(f"pool must be 'max' or 'mean', got {pool!r}")
    if threshold is not None and quantile is not None:
        raise ValueError(f"pass either threshold= or quantile=, not both (got threshold="
                         f"{threshold!r}, quantile={quantile!r})")
    if thresholds_from is not None:
        if not isinstance(thresholds_from, Mapping):
            raise TypeError(f"thresholds_from must be the {{site: Binarized}} mapping of an "
                            f"earlier activations call, got {type(thresholds_from).__name__}")
        if threshold is not None or quantile is not None or conv_quantile != 0.9:
            raise ValueError("thresholds_from= reuses the earlier thresholds; leave threshold=, "
                             "quantile= and conv_quantile= unset")
    x = _concrete("x", x)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch of inputs, got shape {x.shape}")
    batch_size = x.shape[0] if batch_size is None else int(batch_size)
    names, local = _resolve_sites(f, _rows(x, 0, batch_size), sites, locality)
    captured = capture(f, tuple(names))
    shapes = {}

    def reduce(name, value):
        value = _widened(value)
        if value.ndim <= 2:
            return value.reshape(value.shape[0], -1)
        return _map_items(value, name in local, pool)

    def forward(start):
        """Dispatch one batch: its sites' items (2-D, pooled or flattened) on the device."""
        _, values = captured(_rows(x, start, batch_size))
        traced = [s for s in names if isinstance(values[s], jax.core.Tracer)]
        if traced:
            raise TypeError(
                f"activations got traced values at sites {traced}: f closes over values traced "
                "by your jit, vmap or grad (its parameters, passed into the transformed "
                "function), and rule mining reads the activations back to the host, so it "
                "cannot run inside them. Call activations outside your transformation, with f "
                "closing over concrete parameters.")
        shapes.update((s, tuple(values[s].shape[1:])) for s in names)
        return {s: reduce(s, values[s]) for s in names}

    chunks = {s: [] for s in names}
    # One read per batch (every site at once), while the next batch runs.
    for _, items in fetch_ahead(range(0, x.shape[0], batch_size), forward):
        for s in names:
            chunks[s].append(items[s])
    conv = {s: len(shapes[s]) >= 2 for s in names}   # a map: (*positions, c) per sample
    if quantile is not None and all(conv.values()):
        raise ValueError(f"quantile= applies to dense (n, d) sites, but every selected site "
                         f"{names} is a conv map, thresholded at conv_quantile= (now "
                         f"{conv_quantile!r}): pass conv_quantile={quantile!r} instead.")
    out = {}
    for s in names:
        acts = np.concatenate(chunks[s])
        _finite(acts, s)
        shape = (shapes[s] if s in local else shapes[s][-1:]) if conv[s] else acts.shape[1:]
        pooled = pool if conv[s] and s not in local else None
        if thresholds_from is not None:
            items, thresholds = _reused(thresholds_from, s, acts, tuple(shape), pooled)
        else:
            # Conv items are already pooled (or flattened): threshold them as binarize does.
            items, thresholds = _thresholded(acts, threshold,
                                             conv_quantile if conv[s] else quantile)
        _warn_constant(items, acts, s)
        out[s] = Binarized(items, thresholds, tuple(shape), pooled)
    return out


def _rows(x, start: int, size: int) -> jax.Array:
    """Rows ``[start, start + size)`` of ``x`` ``(n, ...)`` as a device array: a JAX array is
    sliced on its device (a static slice: no index is sent), a NumPy one on the host, and only
    the slice is sent."""
    stop = min(start + size, x.shape[0])
    if isinstance(x, jax.Array):
        return lax.slice_in_dim(x, start, stop)
    return jnp.asarray(x[start:stop])


def _reused(previous, site, acts, shape, pool) -> tuple[np.ndarray, np.ndarray]:
    """Items of ``acts`` (2-D, pooled with ``pool``, None if not pooled, or flattened) at the
    thresholds of ``previous[site]``."""
    if site not in previous:
        raise ValueError(f"thresholds_from has no thresholds for site {site!r} (it has "
                         f"{list(previous)}); binarize that site on the training data too")
    old = previous[site]
    if not isinstance(old, Binarized):
        raise TypeError(f"thresholds_from[{site!r}] must be a Binarized, got {type(old).__name__}")
    if tuple(old.shape) != shape:
        hint = (" (binarized there in locality mode: pass the same locality= as then)"
                if len(old.shape) != len(shape) else "")
        raise ValueError(f"site {site!r} has items of shape {shape} here but {tuple(old.shape)} "
                         f"in thresholds_from{hint}")
    if pool is not None and old.pool is not None and old.pool != pool:
        raise ValueError(f"site {site!r} is pooled with pool={pool!r} here but its thresholds "
                         f"in thresholds_from are of pool={old.pool!r} values: pass "
                         f"pool={old.pool!r}, as then")
    return _thresholded(acts, np.asarray(old.thresholds), None)
