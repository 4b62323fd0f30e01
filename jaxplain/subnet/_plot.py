"""Pictures of a sub-network: the chain diagram and the kept filters' feature maps."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import jaxplain as jp
from jaxplain.subnet._extract import apply
from jaxplain.subnet._types import SubNetwork


def plot_chain(subnetwork: SubNetwork, *, max_units: int = 12, ax=None, title: str | None = None):
    """The chain diagram (as NeuroChains' Figure 1): one column per scored layer, its kept
    units as nodes coloured by their multiplier ``gate * score``, removed layers greyed out.
    The edges are schematic (the figure says so): every kept unit of one layer joins every kept
    unit of the next, whether or not the model connects them (a depthwise convolution joins a
    unit to one unit; skip connections are not drawn): the sub-network holds only the units,
    not the weights between them. A removed layer breaks the chain: no edge crosses it.

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
    for a, b in zip(subnetwork.sites, subnetwork.sites[1:]):  # none across a removed layer
        for ca in shown[a]:
            for cb in shown[b]:
                (x0, y0), (x1, y1) = pos[(a, int(ca))], pos[(b, int(cb))]
                ax.plot([x0, x1], [y0, y1], color="0.75", lw=0.5, zorder=1)
    for (name, c), (x, y) in pos.items():
        ax.scatter([x], [y], s=260, color=cmap(norm(mult[name][c])), edgecolors="black",
                   zorder=2)
        ax.text(x, y, str(c), ha="center", va="center", fontsize=7, zorder=3,
                color="white" if norm(mult[name][c]) < 0.6 else "black")
    ax.text(0.5, -0.02, "edges are schematic: all kept units of adjacent layers, not the "
            "model's connections; none cross a removed layer", transform=ax.transAxes,
            ha="center", va="top", fontsize=7, color="0.4")
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


def _within(columns: list, max_units: int) -> list:
    """At most `max_units` columns, in layer order: every dense site keeps its one column and
    the kept filters (``(site, int)`` entries, largest multipliers first) fill the rest."""
    budget = max_units - sum(not isinstance(c, int) for _, c in columns)
    maps = [col for col in columns if isinstance(col[1], int)][:max(budget, 0)]
    return [col for col in columns if not isinstance(col[1], int) or col in maps]


def plot_feature_maps(f: Callable, subnetwork: SubNetwork, x, *, max_images: int = 4,
                      max_units: int = 10):
    """The sub-network's values of its kept units on region examples: one row per example,
    then one column per kept filter of a spatial site (largest multipliers first, in layer
    order) or one column per dense site, each normalised on its own.

    How a site is drawn follows its value per example: a spatial map ``(h, w, channels)``
    (images) as one image per kept filter; a 1-D map ``(length, channels)`` (sequences, 1-D
    convolutions) as one line over the positions per kept filter; a vector ``(units,)`` (an
    MLP's dense layers) as one column of bars, the kept units' values (largest multipliers
    first, at most ``max_units``; the ticks name the units). The input column shows an image,
    a sequence's channels as lines, or a vector's features as bars. Sites of other ranks
    (3-D convolutions) are left out.

    Args:
      f: The full model.
      subnetwork: From :func:`extract`.
      x: Examples in ``f``'s own layout: images NHWC or, for a model that reads them channels
        first (as an Equinox CNN does), NCHW; sequences ``(n, length, channels)``; vectors
        ``(n, features)``. The first ``max_images`` are shown.
      max_images: Rows.
      max_units: Columns after the input (and bars per dense site's column): every kept
        dense site gets its column, the kept filters fill the others.

    Returns:
      The matplotlib figure.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import matplotlib; matplotlib.use("Agg")
      >>> from jaxplain import subnet
      >>> w1, w2 = jnp.ones((5, 4)), jnp.ones((4, 2))
      >>> def f(x):
      ...     with jax.named_scope("dense"):
      ...         h = x @ w1
      ...     return jax.nn.relu(h) @ w2
      >>> sub = subnet.SubNetwork(masks={"dense": jnp.array([1, 0, 1, 1], bool)},
      ...     scores={"dense": jnp.ones(4)}, gates={"dense": jnp.ones(())},
      ...     region_agreement=jnp.ones(()), region_kl=jnp.zeros(()), l1=jnp.zeros(()),
      ...     threshold=jnp.zeros(()), sites=("dense",))
      >>> fig = subnet.plot_feature_maps(f, sub, jnp.ones((2, 5)))
      >>> [t.get_text() for t in fig.axes[1].get_xticklabels()]
      ['0', '2', '3']
    """
    import matplotlib.pyplot as plt

    from jaxplain.core._channels import channels_last_view
    from jaxplain.report._display import show_input

    x = x[:max_images]
    _, axis = channels_last_view(f, x)  # the input's channel axis, when it is not the last
    kept_sites = [n for n in subnetwork.sites if n in subnetwork.kept_layers]
    _, values = jp.capture(apply(f, subnetwork), kept_sites)(x)
    mult = {n: np.asarray(v) for n, v in subnetwork.multipliers().items()}
    columns = []  # (site, filter) for a map, (site, units) for a dense site's bars
    for n in kept_sites:
        kept = np.flatnonzero(np.asarray(subnetwork.masks[n]))
        kept = kept[np.argsort(-mult[n][kept], kind="stable")]
        if values[n].ndim in (3, 4):
            columns += [(n, int(c)) for c in kept]
        elif values[n].ndim == 2:
            columns.append((n, kept[:max_units]))
    columns = _within(columns, max_units)
    rows = x.shape[0]
    fig, axes = plt.subplots(rows, len(columns) + 1, figsize=(1.3 * (len(columns) + 1), 1.4 * rows),
                             squeeze=False)
    for r in range(rows):
        example = np.asarray(x[r])
        if axis is not None:
            example = np.moveaxis(example, axis - 1, -1)
        show_input(axes[r, 0], example)  # RGB rescaled, other channel counts averaged
        for j, (n, c) in enumerate(columns, start=1):
            ax, v = axes[r, j], np.asarray(values[n][r])
            if isinstance(c, int) and v.ndim == 3:
                ax.imshow(v[..., c], cmap="magma")
            elif isinstance(c, int):
                ax.plot(np.arange(v.shape[0]), v[:, c], color="tab:purple", lw=1)
            else:
                ax.bar(np.arange(len(c)), v[c], width=0.8, color="tab:purple")
            if r == 0:
                ax.set_title(f"{n} {c}\n({mult[n][c]:.2f})" if isinstance(c, int) else
                             f"{n}\n{len(c)} of {int(np.asarray(subnetwork.masks[n]).sum())} "
                             "kept", fontsize=7)
    axes[0, 0].set_title("input", fontsize=7)
    for a in axes.ravel():
        a.set_xticks([])
        a.set_yticks([])
    if np.ndim(x) == 2:  # vectors: a few feature indices under the input's bars
        ticks = np.unique(np.linspace(0, x.shape[1] - 1, min(x.shape[1], 5)).round().astype(int))
        for a in axes[:, 0]:
            a.set_xticks(ticks, [str(t) for t in ticks], fontsize=5)
    for j, (n, c) in enumerate(columns, start=1):
        if not isinstance(c, int):  # name the dense units under their bars
            for a in axes[:, j]:
                a.set_xticks(np.arange(len(c)), [str(u) for u in c], fontsize=5)
    fig.tight_layout()
    return fig
