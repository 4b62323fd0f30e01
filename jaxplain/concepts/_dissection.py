"""Network dissection: IoU between thresholded unit activations and concept masks."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float

from jaxplain.core import capture
from jaxplain.core._channels import channels_last_view
from jaxplain.core._select import one_site


def iou(acts: Float[ArrayLike, "b h w units"], masks: Bool[ArrayLike, "b H W concepts"], *,
        quantile: float = 0.995, thresholds: Float[ArrayLike, " units"] | None = None
        ) -> Float[Array, "units concepts"]:
    """Dataset-wide IoU of each unit's thresholded activation map with each concept mask.

    Each unit's maps are resized (bilinear; antialiased, i.e. averaged over a wider window,
    where the masks are coarser) to the masks' resolution and binarized at
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
    unit = (acts.reshape(-1, acts.shape[-1]) > thresholds[None, :]).astype(jnp.float32)
    concept = masks.reshape(-1, masks.shape[-1]).astype(jnp.float32)
    inter = unit.T @ concept
    union = jnp.sum(unit, 0)[:, None] + jnp.sum(concept, 0)[None, :] - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def _masks_channels_last(masks: Array, x_shape: tuple[int, ...], axis: int | None) -> Array:
    """``masks`` given in ``x``'s layout (channels on ``axis``, or last) moved to NHWC; a layout
    that contradicts ``x``'s is a ValueError saying how to fix it. At any resolution the masks'
    spatial axes must have ``x``'s aspect ratio (up to rounding): a layout mistake puts the
    concepts on a spatial axis."""
    if masks.ndim != 4 or masks.shape[0] != x_shape[0]:
        raise ValueError(f"masks must be a 4-D boolean batch in x's layout with one map per "
                         f"concept and b = {x_shape[0]} images (x has shape {x_shape}), got "
                         f"shape {masks.shape}")
    if axis is None:  # channels last: x (b, H, W, c), masks (b, H, W, concepts)
        hw, spatial, other = tuple(x_shape[1:3]), tuple(masks.shape[1:3]), masks.shape[2:]
        layout, fix = "(b, H, W, concepts)", "jnp.moveaxis(masks, 1, -1)"
        wrong = f"channels-first (b, concepts, H, W), but the model reads x {x_shape} channels last"
    else:
        hw = tuple(d for i, d in enumerate(x_shape) if i not in (0, axis))
        spatial = tuple(d for i, d in enumerate(masks.shape) if i not in (0, axis))
        other, layout = masks.shape[1:3], f"x's layout, with the concepts on axis {axis}"
        fix = f"jnp.moveaxis(masks, -1, {axis})"
        wrong = (f"channels-last (b, H, W, concepts), but the model reads x {x_shape} with its "
                 f"channels on axis {axis}")
    if _same_aspect(spatial, hw):
        return masks if axis is None else jnp.moveaxis(masks, axis, -1)
    if _same_aspect(tuple(other), hw):
        raise ValueError(f"masks shaped {masks.shape} look {wrong}: pass masks "
                         f"as {layout}, e.g. {fix}")
    raise ValueError(f"masks shaped {masks.shape}, read as {layout}, have spatial axes "
                     f"{spatial}, not of the aspect ratio of x's {hw} (x has shape {x_shape}): "
                     "masks may be at any resolution, but of the images' shape")


def _same_aspect(spatial: tuple[int, ...], hw: tuple[int, ...]) -> bool:
    """Whether ``(H', W')`` is ``(H, W)`` scaled, each side rounded (to within a pixel)."""
    (h1, w1), (h, w) = spatial, hw
    return abs(h1 * w - w1 * h) < h + w


def dissect(f: Callable[[Array], Array], x: Float[ArrayLike, "b H W c"],
            masks: Bool[ArrayLike, "b H W concepts"], *, site: str, quantile: float = 0.995,
            thresholds: Float[ArrayLike, " units"] | None = None) -> Float[Array, "units concepts"]:
    """Network dissection of ``site``: :func:`iou` of its activations on ``x`` with ``masks``.

    Args:
        f: the model, a pure function from a batch to logits.
        x: images in the model's own layout: ``(b, H, W, c)``, or ``(b, c, H, W)`` for a
            channels-first model (one whose first convolution reads the channels on axis 1).
        masks: boolean concept masks in ``x``'s layout, one map per concept where ``x`` has its
            channels: ``(b, H', W', concepts)``, or ``(b, concepts, H', W')`` for a
            channels-first model, at any resolution ``(H', W')`` of ``x``'s aspect ratio
            (each side rounded). Spatial axes of another aspect ratio (a layout that
            contradicts ``x``'s, e.g. channels-first masks for an NHWC model) are a
            ValueError.
        site: the site to dissect, a name or a glob with one match (presented channels-last,
            so its units are on the last axis).
        quantile: per-unit quantile used as threshold when ``thresholds`` is None.
        thresholds: explicit ``(units,)`` thresholds, as in :func:`iou` (e.g. those of another
            data set).

    Returns:
        ``(units, concepts)`` IoU values in ``[0, 1]``. Runs eagerly or under ``jax.jit``.

    Example:
        >>> masks = jnp.concatenate([x > 0.5, x <= 0.5], axis=-1)    # (b, 8, 8, 2) for NHWC x
        >>> scores = dissect(f, x, masks, site="block1/relu_1")      # (16 units, 2 concepts)
    """
    x, masks = jnp.asarray(x), jnp.asarray(masks)
    if x.ndim == 4:
        _, axis = channels_last_view(f, jax.ShapeDtypeStruct(x.shape, x.dtype))
        masks = _masks_channels_last(masks, tuple(x.shape), axis)
    _, acts = capture(f, site)(x)
    return iou(acts[one_site(tuple(acts), site)], masks, quantile=quantile, thresholds=thresholds)
