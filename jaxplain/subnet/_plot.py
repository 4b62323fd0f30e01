"""Pictures of a sub-network: the chain diagram and the kept filters' feature maps."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import jaxplain as jp
from jaxplain.subnet._extract import apply
from jaxplain.subnet._types import SubNetwork


def plot_chain(subnetwork: SubNetwork, *, max_units: int = 12, ax=None, title: str | None = None):
    """The chain diagram (as NeuroChains' Figure 1): one column per scored layer, its kept
    units as nodes coloured by their multiplier ``gate * score``, edges between the kept units
    of consecutive kept layers, removed layers greyed out.

    Args:
      subnetwork: From :func:`extract`.
      max_units: At most this many nodes per layer (the largest multipliers); the rest are
        counted in the label.
      ax: A matplotlib axes to draw on (a new figure otherwise).
      title: Figure title; by default the kept units and layers.

    Returns:
      The matplotlib figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors

    if ax is None:
        fig, ax = plt.subplots(figsize=(2.2 * len(subnetwork.sites) + 1.5, 4.5))
    else:
        fig = ax.figure
    mult = {n: np.asarray(v) for n, v in subnetwork.multipliers().items()}
    kept = {n: np.flatnonzero(np.asarray(subnetwork.masks[n])) for n in subnetwork.sites}
    shown = {n: k[np.argsort(-mult[n][k])][:max_units] for n, k in kept.items()}
    values = np.concatenate([mult[n][s] for n, s in shown.items()] + [np.zeros(1)])
    norm = colors.Normalize(0.0, max(float(values.max()), 1e-6))
    cmap = plt.get_cmap("viridis")
    pos = {}
    for col, name in enumerate(subnetwork.sites):
        units = shown[name]
        ys = np.linspace(0.9, 0.1, len(units)) if len(units) > 1 else np.array([0.5])
        for c, y in zip(units, ys):
            pos[(name, int(c))] = (col, float(y))
        total = mult[name].size
        label = f"{name}\n{len(kept[name])}/{total} kept"
        if len(kept[name]) > len(units):
            label += f" (+{len(kept[name]) - len(units)} more)"
        ax.text(col, -0.05, label, ha="center", va="top", fontsize=8,
                color="black" if len(units) else "0.6")
        if not len(units):
            ax.axvspan(col - 0.3, col + 0.3, color="0.92", zorder=0)
            ax.text(col, 0.5, "removed", ha="center", va="center", color="0.5", rotation=90)
    kept_cols = [n for n in subnetwork.sites if len(shown[n])]
    for a, b in zip(kept_cols, kept_cols[1:]):
        for ca in shown[a]:
            for cb in shown[b]:
                (x0, y0), (x1, y1) = pos[(a, int(ca))], pos[(b, int(cb))]
                ax.plot([x0, x1], [y0, y1], color="0.75", lw=0.5, zorder=1)
    for (name, c), (x, y) in pos.items():
        ax.scatter([x], [y], s=260, color=cmap(norm(mult[name][c])), edgecolors="black",
                   zorder=2)
        ax.text(x, y, str(c), ha="center", va="center", fontsize=7, zorder=3,
                color="white" if norm(mult[name][c]) < 0.6 else "black")
    ax.set_xlim(-0.6, len(subnetwork.sites) - 0.4)
    ax.set_ylim(-0.3, 1.0)
    ax.axis("off")
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.03,
                 label="gate x score")
    kept_total = sum(len(k) for k in kept.values())
    total = sum(m.size for m in mult.values())
    ax.set_title(title or f"{kept_total}/{total} units, {len(kept_cols)}/"
                 f"{len(subnetwork.sites)} layers kept; region agreement "
                 f"{100 * float(subnetwork.region_agreement):.0f}%")
    return fig


def plot_feature_maps(f: Callable, subnetwork: SubNetwork, x, *, max_images: int = 4,
                      max_units: int = 10):
    """The sub-network's feature maps of its kept filters (spatial sites only) on region
    images: one row per image, one column per kept filter (largest multipliers first, in layer
    order), each map normalised on its own.

    Args:
      f: The full model.
      subnetwork: From :func:`extract`.
      x: Images in ``f``'s own layout, NHWC or, for a model that reads them channels first
        (as an Equinox CNN does), NCHW; the first ``max_images`` are shown.
      max_images: Rows.
      max_units: Columns.

    Returns:
      The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    from jaxplain.core._channels import channels_last_view

    x = x[:max_images]
    _, axis = channels_last_view(f, x)  # the input's channel axis, when it is not the last
    spatial = [n for n in subnetwork.sites if n in subnetwork.kept_layers]
    _, values = jp.capture(apply(f, subnetwork), spatial)(x)
    spatial = [n for n in spatial if values[n].ndim == 4]
    mult = {n: np.asarray(v) for n, v in subnetwork.multipliers().items()}
    columns = []
    for n in spatial:
        kept = np.flatnonzero(np.asarray(subnetwork.masks[n]))
        columns += [(n, int(c)) for c in kept[np.argsort(-mult[n][kept])]]
    columns = columns[:max_units]
    rows = x.shape[0]
    fig, axes = plt.subplots(rows, len(columns) + 1, figsize=(1.3 * (len(columns) + 1), 1.4 * rows),
                             squeeze=False)
    for r in range(rows):
        image = np.asarray(x[r])
        if axis is not None:
            image = np.moveaxis(image, axis - 1, -1)
        axes[r, 0].imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
        for j, (n, c) in enumerate(columns, start=1):
            axes[r, j].imshow(np.asarray(values[n][r, ..., c]), cmap="magma")
            if r == 0:
                axes[r, j].set_title(f"{n} {c}\n({mult[n][c]:.2f})", fontsize=7)
    axes[0, 0].set_title("input", fontsize=7)
    for a in axes.ravel():
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    return fig
