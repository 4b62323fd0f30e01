"""One example or one attribution map on a matplotlib axis, whatever the input's shape."""

from __future__ import annotations

import warnings

import numpy as np

#: The colour of a non-finite (NaN or inf) attribution value: grey, outside both colour maps.
BAD = "0.55"


def is_image(example) -> bool:
    """True for one ``(h, w, channels)`` example (NHWC without the batch)."""
    return np.ndim(example) == 3


def is_volume(example) -> bool:
    """True for one ``(depth, h, w, channels)`` example (NDHWC without the batch)."""
    return np.ndim(example) == 4


def feature_ticks(ax, size: int, *, count: int = 5) -> None:
    """A few labelled x ticks (at most ``count``, the first and the last included) at the
    indices ``0 .. size - 1`` of a plot over features or positions, so a reader can tell which
    bar is feature 3."""
    ticks = np.unique(np.linspace(0, size - 1, min(size, count)).round().astype(int))
    ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=5)
    ax.set_yticks([])


def _no_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def show_input(ax, example, *, cmap: str = "gray", vmin=None, vmax=None) -> None:
    """``(h, w, 1)``: grey levels; ``(h, w, 3)``: RGB scaled to [0, 1]; other channel counts:
    their mean; a volume ``(depth, h, w, channels)``: its mean over depth, drawn as an image; a
    sequence ``(length, channels)``: one line per channel over the positions (an image of
    channels x positions beyond 4 channels); a vector ``(d,)``: a bar chart with a few
    feature-index ticks; anything else: flattened to bars. A sequence of 2 to 4 channels gets a
    legend naming them."""
    x = np.asarray(example, np.float64)
    if is_volume(x):
        x = x.mean(0)
    if is_image(x) and x.shape[-1] == 3:
        span = x.max() - x.min()
        ax.imshow((x - x.min()) / span if span > 0 else np.zeros_like(x))
        _no_ticks(ax)
    elif is_image(x):
        ax.imshow(x[..., 0] if x.shape[-1] == 1 else x.mean(-1), cmap=cmap, vmin=vmin, vmax=vmax)
        _no_ticks(ax)
    elif x.ndim == 2 and x.shape[1] <= 4:
        for c, channel in enumerate(x.T):
            ax.plot(np.arange(x.shape[0]), channel, lw=0.8, label=f"ch {c}")
        if x.shape[1] > 1:  # which line is which channel
            ax.legend(fontsize=5, handlelength=1, loc="upper right", frameon=False)
        ax.set_xlim(-0.5, x.shape[0] - 0.5)
        feature_ticks(ax, x.shape[0])
    elif x.ndim == 2:
        ax.imshow(x.T, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
        feature_ticks(ax, x.shape[0])
    else:
        ax.bar(np.arange(x.size), x.ravel(), width=1.0, color="0.4")
        feature_ticks(ax, x.size)


def show_map(ax, attribution, *, signed: bool = True) -> None:
    """An attribution shaped like one example: images summed over channels (blue-white-red
    around 0 when ``signed``, else its magnitude over its maximum), volumes
    ``(depth, h, w, channels)`` summed over depth and channels; a sequence
    ``(length, channels)`` as an image of channels (rows) x positions, or bars over the
    positions for one channel; vectors as bars with a few feature-index ticks (and a zero line
    when ``signed``). Each panel is scaled to its own largest absolute value.

    Non-finite values (NaN, inf) are left out of the scale, drawn grey (`BAD`: a pixel, or a
    full-height band in place of a bar) and counted in one warning.
    """
    a = np.asarray(attribution, np.float64)
    if is_volume(a):
        a = a.sum(0)
    image = is_image(a)
    if image:
        a = a.sum(-1)
    elif a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    elif a.ndim != 2:
        a = a.ravel()
    finite = np.isfinite(a)
    if not finite.all():
        warnings.warn(f"show_map: {a.size - finite.sum()} of {a.size} attribution values are "
                      "not finite (NaN or inf); they are drawn grey and left out of the colour "
                      "scale", RuntimeWarning, stacklevel=2)
    scale = max(np.abs(a[finite]).max(initial=0.0), 1e-12)  # the largest finite |value|
    if signed:
        a, low, high = np.where(finite, a, np.nan), -scale, scale
    else:
        a, low, high = np.where(finite, np.abs(a) / scale, np.nan), 0.0, 1.0
    if a.ndim == 2:
        import matplotlib

        sequence = not image  # (length, channels): channels as rows
        cmap = matplotlib.colormaps["bwr" if signed else "hot"].with_extremes(bad=BAD)
        ax.imshow(np.ma.masked_invalid(a.T if sequence else a), cmap=cmap,
                  vmin=low, vmax=high,
                  aspect="auto" if sequence else None, interpolation="nearest")
        if sequence:
            feature_ticks(ax, a.shape[0])
        else:
            _no_ticks(ax)
    else:
        heights = np.where(finite, a, 0.0)
        ax.bar(np.arange(a.size), heights, width=1.0,
               color=np.where(heights >= 0, "tab:red", "tab:blue"))
        for i in np.flatnonzero(~finite):
            ax.axvspan(i - 0.5, i + 0.5, color=BAD, lw=0)
        if signed:
            ax.axhline(0.0, color="black", lw=0.5)
        feature_ticks(ax, a.size)


def map_grid(x, maps: dict, labels, *, size: float = 1.3):
    """A figure with one row per example: the input, then one column per map.

    Args:
      x: the examples, ``(n, ...)``.
      maps: ``{column title: values}`` with values shaped like `x` (or one example's map per
        row), or ``{title: (values, signed)}`` to show some unsigned (magnitude) maps.
      labels: the class of each row, ``(n,)``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = {name: v if isinstance(v, tuple) else (v, True) for name, v in maps.items()}
    rows, cols = x.shape[0], len(columns) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for i in range(rows):
        show_input(axes[i, 0], x[i])
        axes[i, 0].set_ylabel(f"class {labels[i]}", fontsize=7)
        for j, (name, (values, signed)) in enumerate(columns.items(), start=1):
            show_map(axes[i, j], values[i], signed=signed)
            if i == 0:
                axes[i, j].set_title(name, fontsize=6)
    axes[0, 0].set_title("input", fontsize=7)
    fig.tight_layout()  # show_input and show_map set the ticks: none on images
    return fig
