"""Overlap statistics between pathways: Jaccard index and the share of dead units."""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float

from jaxplain.pathways import _checks
from jaxplain.pathways._select import _flat


def _same_sites(a: Mapping, b: Mapping, what: str) -> None:
    if set(a) != set(b):
        raise ValueError(
            f"{what} must cover the same sites; got {sorted(a)} and {sorted(b)}."
        )


def jaccard(
    a: Mapping[str, Bool[ArrayLike, "batch *site"]], b: Mapping[str, Bool[ArrayLike, "batch *site"]],
) -> Float[Array, "batch"]:
    """Jaccard index ``|A and B| / |A or B|`` of two pathways, per example, all sites pooled.

    For one site pass one-entry dicts. Two empty pathways count as identical (1.0).

    References:
      Khakzar et al., CVPR 2021 (pathway analysis of contribution vs pruning pathways).
    """
    _checks.check_masks(a)
    _checks.check_masks(b)
    _same_sites(a, b, "a and b")
    fa = _flat({n: a[n] for n in a}).astype(bool)
    fb = _flat({n: b[n] for n in a}).astype(bool)
    inter = (fa & fb).sum(axis=1)
    union = (fa | fb).sum(axis=1)
    return jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0)


def dead_share(
    masks: Mapping[str, Bool[ArrayLike, "batch *site"]],
    activations: Mapping[str, Float[ArrayLike, "batch *site"]],
) -> Float[Array, "batch"]:
    """Share of a pathway's units that are dead in the original network: ``|path & (a <= 0)| / |path|``.

    Args:
      masks: ``{site: mask}``.
      activations: the original network's values at the same sites, e.g.
        ``jaxplain.capture(f, list(masks))(x)[1]``.

    Returns:
      ``(batch,)``; 0 for an empty pathway.
    """
    _checks.check_masks(masks)
    _same_sites(masks, activations, "masks and activations")
    fm = _flat({n: masks[n] for n in masks}).astype(bool)
    dead = _flat({n: activations[n] for n in masks}) <= 0
    size = fm.sum(axis=1)
    return jnp.where(size > 0, (fm & dead).sum(axis=1) / jnp.maximum(size, 1), 0.0)
