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


def _grid_mask(chosen: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
    """A boolean mask over one example's features (pixels of an NHWC image) as a mask of x[i]."""
    image = len(x_shape) == 4
    chosen = chosen.reshape(x_shape[1:3] if image else x_shape[1:])
    return chosen[..., None] if image else chosen


def _pixel_scores(a: np.ndarray, image: bool) -> np.ndarray:
    return (a.sum(-1) if image else a).ravel()


def np_pearson(a, b) -> float:
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def np_faithfulness_correlation(f, x, target, attribution, subsets, *, baseline="zeros",
                                output="logit"):
    """Bhatt et al.: per example, Pearson r over subsets of Σ_S a against f(x) − f(x_S←b).
    ``subsets``: ``(batch, samples, n_features)`` bool, the draws to use."""
    x = np.asarray(x, np.float64)
    a = np.asarray(attribution, np.float64)
    base = np_baseline(x, baseline)
    out = []
    for i in range(x.shape[0]):
        t = int(target[i])
        y0 = np_score(f, x[i], t, output)
        score = _pixel_scores(a[i], x.ndim == 4)
        sums, drops = [], []
        for chosen in np.asarray(subsets[i], bool):
            xi = np.where(_grid_mask(chosen, x.shape), base[i], x[i])
            drops.append(y0 - np_score(f, xi, t, output))
            sums.append(score[chosen].sum())
        out.append(np_pearson(sums, drops))
    return np.array(out)


def np_monotonicity(f, x, target, attribution, *, steps, baseline="zeros",
                    output="probability", absolute=False):
    """Arya et al.: add features least relevant first onto the baseline; the fraction of the
    steps − 1 consecutive differences of the output that are >= 0."""
    x = np.asarray(x, np.float64)
    a = np.asarray(attribution, np.float64)
    base = np_baseline(x, baseline)
    out = []
    for i in range(x.shape[0]):
        score = _pixel_scores(a[i], x.ndim == 4)
        score = np.abs(score) if absolute else score
        order = np.argsort(score, kind="stable")
        n = score.size
        values = []
        for k in range(1, steps + 1):
            chosen = np.zeros(n, bool)
            chosen[order[: k * n // steps]] = True
            xi = np.where(_grid_mask(chosen, x.shape), x[i], base[i])
            values.append(np_score(f, xi, int(target[i]), output))
        out.append(np.mean(np.diff(values) >= 0))
    return np.array(out)


def np_monotonicity_correlation(f, x, target, attribution, noise, *, steps,
                                output="probability"):
    """Nguyen & Martínez: Spearman ρ over groups of consecutive |a| rank between the group's
    Σ|a| and mean_s (f(x with the group's features + noise_s) − f(x))². ``noise``:
    ``(batch, samples, *x.shape[1:])``, the draws to use."""
    import scipy.stats

    x = np.asarray(x, np.float64)
    a = np.asarray(attribution, np.float64)
    noise = np.asarray(noise, np.float64)
    out = []
    for i in range(x.shape[0]):
        t = int(target[i])
        y0 = np_score(f, x[i], t, output)
        score = np.abs(_pixel_scores(a[i], x.ndim == 4))
        order = np.argsort(score, kind="stable")
        n = score.size
        relevance, effect = [], []
        for g in range(steps):
            chosen = np.zeros(n, bool)
            chosen[order[g * n // steps: (g + 1) * n // steps]] = True
            mask = _grid_mask(chosen, x.shape)
            changes = [(np_score(f, np.where(mask, x[i] + e, x[i]), t, output) - y0) ** 2
                       for e in noise[i]]
            relevance.append(score[chosen].sum())
            effect.append(np.mean(changes))
        rho = scipy.stats.spearmanr(relevance, effect)[0]
        out.append(0.0 if np.isnan(rho) else rho)
    return np.array(out)


def np_irof(f, x, target, attribution, segments, *, baseline="mean", output="probability"):
    """Rieger & Hansen: remove segments by descending mean relevance; 1 − the trapezoid of
    y_k / y_0 over k / S. ``segments``: ``(batch, *grid)`` ints."""
    x = np.asarray(x, np.float64)
    a = np.asarray(attribution, np.float64)
    base = np_baseline(x, baseline)
    out = []
    for i in range(x.shape[0]):
        t = int(target[i])
        seg = np.asarray(segments[i]).ravel()
        ids = np.unique(seg)
        score = _pixel_scores(a[i], x.ndim == 4)
        means = np.array([score[seg == s].mean() for s in ids])
        order = ids[np.argsort(-means, kind="stable")]
        values = [np_score(f, x[i], t, output)]
        removed = np.zeros(seg.size, bool)
        for s in order:
            removed |= seg == s
            xi = np.where(_grid_mask(removed, x.shape), base[i], x[i])
            values.append(np_score(f, xi, t, output))
        v = np.array(values) / values[0]
        out.append(1.0 - np.trapezoid(v, np.arange(len(v)) / ids.size))
    return np.array(out)


def np_infidelity(f, x, target, attribution, noise, *, scaled=True, output="logit"):
    """Yeh et al.: mean_s (β I_s·a − (f(x) − f(x − I_s)))², β the least-squares scale (1 when
    not ``scaled``). ``noise``: ``(batch, samples, *x.shape[1:])``, the draws I to use."""
    x = np.asarray(x, np.float64)
    a = np.asarray(attribution, np.float64)
    noise = np.asarray(noise, np.float64)
    out = []
    for i in range(x.shape[0]):
        t = int(target[i])
        y0 = np_score(f, x[i], t, output)
        dots = np.array([(e * a[i]).sum() for e in noise[i]])
        changes = np.array([y0 - np_score(f, x[i] - e, t, output) for e in noise[i]])
        beta = (dots * changes).sum() / (dots * dots).sum() if scaled else 1.0
        out.append(np.mean((beta * dots - changes) ** 2))
    return np.array(out)


def np_random_logit(a_target, a_other, *, similarity, win_size=5):
    """Sixt et al.: per example, the Spearman ρ or the SSIM (maps summed over the last axis
    and divided by their max |.|) of the two NHWC maps."""
    import scipy.stats

    out = []
    for m0, m1 in zip(np.asarray(a_target, np.float64), np.asarray(a_other, np.float64)):
        if similarity == "spearman":
            out.append(scipy.stats.spearmanr(m0.sum(-1).ravel(), m1.sum(-1).ravel())[0])
        else:
            m0, m1 = m0.sum(-1), m1.sum(-1)
            out.append(np_ssim(m0 / np.abs(m0).max(), m1 / np.abs(m1).max(), win_size, 2.0))
    return np.array(out)
