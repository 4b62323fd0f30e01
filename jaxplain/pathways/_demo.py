"""The pathways section of the report: pathway gradients next to gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import pathways


def _gradient(f, x, t):
    return jax.grad(lambda x: jnp.take_along_axis(f(x), t[:, None], axis=1).sum())(x)


def _figure(x, maps, titles):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxplain.report._display import show_input, show_map

    rows = len(x)
    fig, axes = plt.subplots(rows, 1 + len(maps), figsize=(1.6 * (1 + len(maps)), 1.6 * rows))
    axes = np.atleast_2d(axes)
    for i in range(rows):
        show_input(axes[i, 0], x[i])  # both set their ticks: none on images, features on bars
        for j, m in enumerate(maps):
            show_map(axes[i, 1 + j], m[i], signed=False)
    for j, title in enumerate(["input"] + titles):
        axes[0, j].set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def _display(maps):
    """Images: the paper's one-channel display (signed value of largest magnitude per pixel)."""
    return pathways.max_abs_channel(maps)[..., None] if maps.ndim == 4 else maps


def demo_section(ctx):
    """Pathway gradient maps beside gradient maps, and the kept fraction per layer."""
    from jaxplain.report import Section

    keeps = (0.2,) if ctx.quick else (0.3, 0.2, 0.05)
    x = jnp.asarray(ctx.data.x_test[:8 if ctx.quick else 64])
    n = x.shape[0]  # the examples used: fewer where the data holds fewer
    t = jnp.argmax(ctx.f(x), axis=-1)
    rows, lines = [], []
    for keep in ctx.progress(keeps, desc="pathways"):
        masks = pathways.select(ctx.f, x, t, keep=keep)
        masked = pathways.apply(ctx.f, masks)(x)
        same = float((jnp.argmax(masked, -1) == t).mean())
        per_site = {s: float(pathways.kept_fraction({s: m}).mean()) for s, m in masks.items()}
        total = float(pathways.kept_fraction(masks).mean())
        rows.append([f"{keep:g}", f"{total:.3f}"] + [f"{per_site[s]:.3f}" for s in masks]
                    + [f"{same:.3f}"])
        lines.append(f"keep={keep:g}: kept {total:.1%} of units; masked net keeps the "
                     f"prediction on {same:.1%} of {n} test {ctx.noun}")
    pg = pathways.pathway_gradient(ctx.f, x, t, keep=0.2)
    grad = _gradient(ctx.f, x, t)
    show = min(4, n)
    fig = _figure(x[:show], [_display(grad[:show]), _display(pg[:show])],
                  ["gradient", "pathway grad."])
    text = ("Critical pathways (Khakzar et al., CVPR 2021): units scored by |activation x "
            "gradient| of the predicted logit, one global percentile per example, masks applied "
            "in the forward pass; the pathway gradient is the input gradient of that masked, "
            "locally linear network.\n" + "\n".join(lines))
    header = ["keep", "kept (all)"] + [f"kept {s}" for s in masks] + ["same prediction"]
    return (
        Section("Critical pathways", text=text)
        .with_table(header=header, rows=rows,
                    caption="Kept fraction of post-ReLU units per layer (mean over examples); "
                            "dead units always drop, so layers differ from the global keep.")
        .with_figure(fig, caption="|gradient| and |pathway gradient| (keep=0.2, i.e. p=80), "
                                  "each divided by its maximum.")
    )
