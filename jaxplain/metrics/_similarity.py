"""Similarity of explanation maps: Spearman rank correlation and SSIM, batched."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Float


def _average_ranks(v: jax.Array) -> jax.Array:
    """Ranks (0-based) along the last axis, ties given their average rank (as scipy's)."""
    s = jnp.sort(v, axis=-1)
    search = jax.vmap(jnp.searchsorted, in_axes=(0, 0, None)) if v.ndim == 2 else jnp.searchsorted
    lo = search(s, v, "left")
    hi = search(s, v, "right")
    return (lo + hi - 1).astype(jnp.float32) / 2


_ULPS = 8  # a spread of fewer ulps than this, of the values' own size, is rounding


def _centered(v: jax.Array) -> jax.Array:
    """``v`` minus its mean along the last axis, scaled by a power of 2 (exact) to a max ``|.|``
    in ``[0.5, 1)`` so no square under- or overflows; all 0 where the standard deviation is below
    ``_ULPS`` ulps of the root mean square (a constant computed along different paths, whose
    copies differ in the last bits)."""
    v = jnp.ldexp(v, -jnp.frexp(jnp.abs(v).max(-1, keepdims=True))[1])
    c = v - v.mean(-1, keepdims=True)
    tol = _ULPS * jnp.finfo(v.dtype).eps
    noise = (c * c).mean(-1, keepdims=True) <= tol * tol * (v * v).mean(-1, keepdims=True)
    return jnp.where(noise, 0.0, c)


def _unless_finite(r: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """``r`` ``(batch,)``, NaN where a row of ``a`` or ``b`` holds NaN or inf (a comparison of
    such values would read as constant or be ranked, giving a plausible score)."""
    finite = jnp.isfinite(a).all(-1) & jnp.isfinite(b).all(-1)
    return jnp.where(finite, r, jnp.nan)


def _pearson(a: jax.Array, b: jax.Array) -> jax.Array:
    """Pearson's r along the last axis; 0 where either side is constant (:func:`_centered`),
    NaN where either holds NaN or inf."""
    ca = _centered(a)
    cb = _centered(b)
    den = jnp.sqrt((ca * ca).sum(-1) * (cb * cb).sum(-1))
    r = jnp.where(den > 0, (ca * cb).sum(-1) / jnp.where(den > 0, den, 1.0), 0.0)
    return _unless_finite(r, a, b)


@jax.jit
def spearman(a: Float[ArrayLike, "batch *shape"],
             b: Float[ArrayLike, "batch *shape"]) -> Float[Array, " batch"]:
    """Spearman's rank correlation between ``a[i]`` and ``b[i]`` over all their elements.

    Ties get average ranks (scipy's ``spearmanr``); a constant map correlates 0 with anything
    (scipy returns NaN there); a map holding NaN or inf gives NaN (as scipy's default
    ``nan_policy="propagate"``), never the correlation of its ranks.

    Example:
        >>> import jax.numpy as jnp
        >>> spearman(jnp.array([[1.0, 2.0, 3.0]]), jnp.array([[10.0, 20.0, 15.0]])).tolist()
        [0.5]
    """
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    return _unless_finite(_pearson(_average_ranks(a), _average_ranks(b)), a, b)


def _box(x: jax.Array, win: int) -> jax.Array:
    total = lax.reduce_window(x, 0.0, lax.add, (1, win, win), (1, 1, 1), "VALID")
    return total / (win * win)


@functools.partial(jax.jit, static_argnames=("win_size",))
def ssim(
    a: Float[ArrayLike, "batch h w"],
    b: Float[ArrayLike, "batch h w"],
    *,
    data_range: float | Float[ArrayLike, ""] = 2.0,
    win_size: int = 5,
) -> Float[Array, " batch"]:
    """Mean structural similarity of 2-D maps with a uniform ``win_size`` window.

    Equal to scikit-image's ``structural_similarity(a[i], b[i], win_size=win_size,
    data_range=data_range)`` (uniform window, sample covariance, ``K1 = 0.01``, ``K2 = 0.03``,
    mean over the windows that fit inside the map); scikit-image's own default window is 7, and
    it has no default range for floats: ``data_range = 2`` suits maps scaled to ``[-1, 1]``.

    Example:
        >>> import jax.numpy as jnp
        >>> m = jnp.arange(36.0).reshape(1, 6, 6) / 36
        >>> ssim(m, m).tolist()
        [1.0]

    References:
        Wang, Bovik, Sheikh, Simoncelli, "Image Quality Assessment: From Error Visibility to
        Structural Similarity", IEEE TIP 2004.
    """
    if a.ndim != 3 or a.shape != b.shape:
        raise ValueError(f"ssim needs two (batch, h, w) maps of one shape, got {a.shape}, {b.shape}")
    if win_size < 3 or win_size > min(a.shape[1:]) or win_size % 2 == 0:
        raise ValueError(f"win_size must be odd, >= 3 and <= {min(a.shape[1:])}, got {win_size}")
    a = a.astype(jnp.float32)
    b = b.astype(jnp.float32)
    n = win_size * win_size
    cov = n / (n - 1)
    ua, ub = _box(a, win_size), _box(b, win_size)
    va = cov * (_box(a * a, win_size) - ua * ua)
    vb = cov * (_box(b * b, win_size) - ub * ub)
    vab = cov * (_box(a * b, win_size) - ua * ub)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    s = ((2 * ua * ub + c1) * (2 * vab + c2)) / ((ua * ua + ub * ub + c1) * (va + vb + c2))
    return s.mean(axis=(1, 2))
