"""Network dissection: IoU between thresholded unit activations and concept masks."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from jaxplain.core import capture


def iou(acts: Float[Array, "b h w units"], masks: Bool[Array, "b H W concepts"], *,
        quantile: float = 0.995, thresholds: Float[Array, " units"] | None = None
        ) -> Float[Array, "units concepts"]:
    """Dataset-wide IoU of each unit's thresholded activation map with each concept mask.

    Each unit's maps are resized (bilinear) to the masks' resolution and binarized at
    ``thresholds`` (default: the unit's ``quantile`` over all images and positions, i.e. its top
    0.5 % by default); ``IoU_{k,c} = sum_x |M_k(x) & L_c(x)| / sum_x |M_k(x) | L_c(x)|``.

    Args:
        acts: activations at a site, NHWC.
        masks: boolean concept masks, one channel per concept.
        quantile: per-unit quantile used as threshold when ``thresholds`` is None.
        thresholds: explicit ``(units,)`` thresholds.

    Returns:
        ``(units, concepts)`` IoU values in ``[0, 1]`` (0 where the union is empty).

    Example:
        >>> scores = iou(acts, masks)          # scores[k, c]
        >>> best = scores.argmax(axis=1)       # each unit's best concept

    References:
        Bau et al. Network dissection: quantifying interpretability of deep visual
        representations. CVPR, 2017.
    """
    acts, masks = jnp.asarray(acts), jnp.asarray(masks)
    if acts.ndim != 4:
        raise ValueError(f"acts must be NHWC (b, h, w, units), got shape {acts.shape}")
    if masks.ndim != 4 or masks.shape[0] != acts.shape[0]:
        raise ValueError(f"masks must be (b, H, W, concepts) with b = {acts.shape[0]}, got shape "
                         f"{masks.shape}")
    if masks.dtype != jnp.bool_:
        raise TypeError(f"masks must be boolean, got dtype {masks.dtype}")
    if thresholds is None and not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    b, hh, ww, _ = masks.shape
    if acts.shape[1:3] != (hh, ww):
        acts = jax.image.resize(acts, (b, hh, ww, acts.shape[-1]), method="bilinear")
    if thresholds is None:
        thresholds = jnp.quantile(acts.reshape(-1, acts.shape[-1]), quantile, axis=0)
    thresholds = jnp.asarray(thresholds)
    if thresholds.shape != (acts.shape[-1],):
        raise ValueError(f"thresholds must have shape ({acts.shape[-1]},), got {thresholds.shape}")
    unit = (acts > thresholds).reshape(-1, acts.shape[-1]).astype(jnp.float32)
    concept = masks.reshape(-1, masks.shape[-1]).astype(jnp.float32)
    inter = unit.T @ concept
    union = jnp.sum(unit, 0)[:, None] + jnp.sum(concept, 0)[None, :] - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def dissect(f: Callable[[Array], Array], x: Float[Array, "b H W c"],
            masks: Bool[Array, "b H W concepts"], *, site: str, quantile: float = 0.995
            ) -> Float[Array, "units concepts"]:
    """Network dissection of ``site``: :func:`iou` of its activations on ``x`` with ``masks``."""
    masks = np.asarray(masks)
    _, acts = capture(f, site)(x)
    return iou(acts[site], masks, quantile=quantile)
