"""Slow float64 NumPy transcriptions of the metrics, one example and one step at a time.

They follow the papers' formulas directly (the way Quantus loops), sharing no code with
``jaxplain.metrics``; ``f`` is only called on single-example batches.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage


def np_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of NHWC images over H and W with nearest-edge extension (scipy)."""
    return scipy.ndimage.gaussian_filter(
        np.asarray(x, np.float64), sigma=(0, sigma, sigma, 0), mode="nearest", truncate=3.0
    )


def np_baseline(x: np.ndarray, kind, sigma: float = 1.0) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if isinstance(kind, str):
        if kind == "zeros":
            return np.zeros_like(x)
        if kind == "mean":
            axes = (1, 2) if x.ndim == 4 else tuple(range(1, x.ndim))
            return np.broadcast_to(x.mean(axis=axes, keepdims=True), x.shape).copy()
        return np_blur(x, sigma)
    return np.broadcast_to(np.asarray(kind, np.float64), x.shape).copy()


def np_score(f, xi: np.ndarray, t: int, output: str) -> float:
    logits = np.asarray(f(np.asarray(xi[None], np.float32)), np.float64)[0]
    if output == "probability":
        e = np.exp(logits - logits.max())
        logits = e / e.sum()
    return float(logits[t])


def np_curve(f, x, target, attribution, *, steps, order="morf", baseline="zeros",
             output="probability", absolute=False, insert=False, sigma=1.0):
    """Deletion / insertion curves ``(batch, steps + 1)`` and areas ``(batch,)``."""
    x = np.asarray(x, np.float64)
    a = np.asarray(attribution, np.float64)
    base = np_baseline(x, baseline, sigma)
    image = x.ndim == 4
    values = []
    for i in range(x.shape[0]):
        score = a[i].sum(-1) if image else a[i]
        score = np.abs(score.ravel()) if absolute else score.ravel()
        n = score.size
        ranking = np.argsort(-score if order == "morf" else score, kind="stable")
        curve = []
        for k in range(steps + 1):
            chosen = np.zeros(n, bool)
            chosen[ranking[: k * n // steps]] = True
            chosen = chosen.reshape(x.shape[1:3] if image else x.shape[1:])
            if image:
                chosen = chosen[..., None]
            xi = np.where(chosen, x[i], base[i]) if insert else np.where(chosen, base[i], x[i])
            curve.append(np_score(f, xi, int(target[i]), output))
        values.append(curve)
    values = np.array(values)
    n = x.shape[1] * x.shape[2] if image else int(np.prod(x.shape[1:]))
    fractions = np.array([k * n // steps for k in range(steps + 1)]) / n
    area = np.array([np.trapezoid(v, fractions) for v in values])
    return fractions, values, area


def np_lerf_change(f, x, attribution, target, fractions, baseline="zeros"):
    """Critical-pathways LeRF change ``|p(x) - p(x~)| / p(x)`` per example and fraction."""
    x = np.asarray(x, np.float64)
    base = np_baseline(x, baseline)
    out = np.zeros((x.shape[0], len(fractions)))
    for i in range(x.shape[0]):
        score = np.abs(np.asarray(attribution[i], np.float64).sum(-1)).ravel()
        order = np.argsort(score, kind="stable")
        p0 = np_score(f, x[i], int(target[i]), "probability")
        for j, q in enumerate(fractions):
            count = int(q * score.size + 1e-9)
            chosen = np.zeros(score.size, bool)
            chosen[order[:count]] = True
            xi = np.where(chosen.reshape(x.shape[1:3])[..., None], base[i], x[i])
            out[i, j] = abs(p0 - np_score(f, xi, int(target[i]), "probability")) / p0
    return out


def np_gini(v: np.ndarray) -> float:
    """Gini index from the mean absolute difference: Σ_ij |v_i − v_j| / (2 n Σ v)."""
    v = np.abs(np.asarray(v, np.float64).ravel())
    if v.sum() == 0:
        return 0.0
    return float(np.abs(v[:, None] - v[None, :]).sum() / (2 * v.size * v.sum()))


def np_ssim(a: np.ndarray, b: np.ndarray, win: int, data_range: float) -> float:
    """scikit-image's default SSIM (uniform window, sample covariance), via scipy filters."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    filt = lambda z: scipy.ndimage.uniform_filter(z, size=win, mode="reflect")  # noqa: E731
    ux, uy = filt(a), filt(b)
    cov = win * win / (win * win - 1)
    vx = cov * (filt(a * a) - ux * ux)
    vy = cov * (filt(b * b) - uy * uy)
    vxy = cov * (filt(a * b) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())
