"""From activations to items: binarize dense units, conv filters, or conv (filter, position)s."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Binarized(NamedTuple):
    """Boolean items with the thresholds that made them.

    Attributes:
      items: bool ``(n, d)``; rows are samples, columns are items.
      thresholds: float ``(d,)``; item i is on iff its (pooled) activation > thresholds[i].
      shape: the per-sample item layout: ``(units,)``, ``(channels,)`` in filter mode, or
        ``(height, width, channels)`` in locality mode (items are that array flattened).
    """

    items: np.ndarray
    thresholds: np.ndarray
    shape: tuple


def binarize(acts, *, threshold=0.0, quantile=None, conv_mode="filter", pool="max",
             conv_quantile=0.9, channel_axis=-1) -> Binarized:
    """Turn activations into boolean items, one threshold per item.

    Dense ``(n, d)`` activations: item i is on iff ``a_i > threshold`` (default 0, i.e. ReLU
    active), or above its own ``quantile`` over the data when ``quantile`` is given.
    Conv ``(n, h, w, c)`` activations (NHWC; pass ``channel_axis=1`` for ``(n, c, h, w)`` maps
    of a channels-first model, which are read as their NHWC transpose):

    - ``conv_mode="filter"``: one item per filter; the map is pooled over space (``pool`` "max"
      or "mean") and the filter is on iff the pooled value exceeds the filter's
      ``conv_quantile`` over the data (default 0.9: on in about the top 10% of samples).
    - ``conv_mode="locality"``: one item per (position, filter), thresholded the same way per
      item, so rules can show where a filter is expected to fire; items are ordered as the
      flattened ``(h, w, c)`` map.

    ``conv_quantile=None`` uses ``threshold`` for conv items as well.

    Args:
      acts: float ``(n, d)`` or ``(n, h, w, c)`` activations over a data set.
      channel_axis: the axis of ``acts`` that holds the filters of a conv map (``-1`` or ``3``
        for NHWC, ``1`` for NCHW). Activations captured with :func:`jaxplain.capture` or
        :func:`activations` are already channels-last, whatever the model's layout.

    Returns:
      ``Binarized(items, thresholds, shape)``.

    Example:
      >>> items, thresholds, _ = binarize(np.array([[0.0, 2.0], [1.0, 0.0]]))
      >>> items.tolist()
      [[False, True], [True, False]]
    """
    acts = np.asarray(acts)
    if not np.issubdtype(acts.dtype, np.floating) and not np.issubdtype(acts.dtype, np.integer):
        raise TypeError(f"acts must be a numeric array, got dtype {acts.dtype}")
    if acts.ndim not in (2, 4) or acts.shape[0] == 0:
        raise ValueError(f"acts must be (n, d) dense or (n, h, w, c) conv activations with n > 0, "
                         f"got shape {acts.shape}")
    if np.isnan(acts).any():
        raise ValueError("acts contains NaN")
    if conv_mode not in ("filter", "locality"):
        raise ValueError(f"conv_mode must be 'filter' or 'locality', got {conv_mode!r}")
    if pool not in ("max", "mean"):
        raise ValueError(f"pool must be 'max' or 'mean', got {pool!r}")
    q = quantile
    if acts.ndim == 4:
        if channel_axis not in (1, 3, -1, -3):
            raise ValueError(f"channel_axis must be 1 (NCHW) or -1 (NHWC) for conv activations, "
                             f"got {channel_axis!r}")
        acts = np.moveaxis(acts, channel_axis, -1)
        q = conv_quantile
        if conv_mode == "filter":
            acts = acts.max(axis=(1, 2)) if pool == "max" else acts.mean(axis=(1, 2))
            shape = acts.shape[1:]
        else:
            shape = acts.shape[1:]
            acts = acts.reshape(acts.shape[0], -1)
    else:
        shape = acts.shape[1:]
    acts = acts.astype(np.float64)
    if q is not None:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        thresholds = np.quantile(acts, q, axis=0)
    else:
        thresholds = np.broadcast_to(np.asarray(threshold, np.float64), acts.shape[1:]).copy()
    return Binarized(acts > thresholds, thresholds, tuple(shape))


def activations(f, x, sites, *, batch_size=256, threshold=0.0, quantile=None,
                conv_quantile=0.9, pool="max", locality=()):
    """Capture activations at ``sites`` over a data set in batches and binarize each site.

    Conv sites are pooled per batch (filter mode), so memory stays bounded; sites named in
    ``locality`` keep every (position, filter) item. Thresholds follow ``binarize``.

    Args:
      f: the model function ``x -> logits``.
      x: inputs ``(n, ...)``.
      sites: site names (a list, in the order the layers should be mined).
      batch_size: samples per forward pass.
      threshold, quantile, conv_quantile, pool: as in ``binarize``.
      locality: site names binarized with ``conv_mode="locality"``.

    Returns:
      ``{site: Binarized}`` in the order of ``sites``; feed ``{k: v.items ...}`` to ``mine``.

    Example:
      >>> layers = activations(f, digits.x_train, ["block1/relu_1", "relu_1"])  # doctest: +SKIP
      >>> rules = mine({k: v.items for k, v in layers.items()})                  # doctest: +SKIP
    """
    from jaxplain.core import capture

    sites = [sites] if isinstance(sites, str) else list(sites)
    unknown = [s for s in locality if s not in sites]
    if unknown:
        raise ValueError(f"locality names {unknown} are not among sites {sites}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if pool not in ("max", "mean"):
        raise ValueError(f"pool must be 'max' or 'mean', got {pool!r}")
    captured = jax.jit(capture(f, sites))

    def reduce(name, value):
        if value.ndim == 4 and name not in locality:
            return value.max(axis=(1, 2)) if pool == "max" else value.mean(axis=(1, 2))
        return value.reshape(value.shape[0], -1)

    chunks, shapes = {s: [] for s in sites}, {}
    x = np.asarray(x)
    for start in range(0, x.shape[0], batch_size):
        _, values = captured(jnp.asarray(x[start:start + batch_size]))
        for s in sites:
            shapes[s] = tuple(values[s].shape[1:])
            chunks[s].append(np.asarray(reduce(s, values[s])))
    out = {}
    for s in sites:
        acts = np.concatenate(chunks[s])
        conv = len(shapes[s]) == 3
        # Conv items are already pooled (or flattened): threshold them as binarize does.
        items = binarize(acts, threshold=threshold, quantile=conv_quantile if conv else quantile)
        shape = (shapes[s] if s in locality else shapes[s][-1:]) if conv else items.shape
        out[s] = Binarized(items.items, items.thresholds, shape)
    return out
