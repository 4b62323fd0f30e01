"""The feature-visualization section of the report: channel grids of two layers and the NMF
neuron groups of the last (on the digits CNN: ``relu`` and the residual block)."""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.core import capture
from jaxplain.core._channels import channels_last_view
from jaxplain.visualize._nmf import neuron_groups
from jaxplain.visualize._objectives import direction
from jaxplain.visualize._param import Fourier
from jaxplain.visualize._regularizers import TotalVariation
from jaxplain.visualize._render import render
from jaxplain.visualize._transforms import Jitter

LAYERS = ("relu", "block1/relu_1")
GROUP_SITE = LAYERS[-1]  # the NMF groups of the experiment (experiments/featvis_digits.py)
TITLE = "Feature visualization and neuron groups"


def spatial_layers(f, x) -> tuple[str, ...]:
    """The first and the last ReLU site with spatial or token axes, ``(n, ..., channels)``:
    ``LAYERS`` on the digits CNN, the two MLPs' ReLUs on the digits ViT.

    Raises:
        ValueError: If ``x`` is not a batch of images (4-d) or the model has no such site
            (:func:`not_applicable` says which).
    """
    reason = not_applicable(f, x)
    if reason:
        raise ValueError(f"feature visualization {reason}.")
    return _spatial(f, x)


def _spatial(f, x) -> tuple[str, ...]:
    from jaxplain.core import relu_sites, sites

    shapes = {s.name: s.shape for s in sites(f, x[:1])}
    spatial = [s for s in relu_sites(f, x[:1]) if len(shapes[s]) >= 3]
    return tuple(dict.fromkeys((spatial[0], spatial[-1]))) if spatial else ()


def not_applicable(f, x) -> str | None:
    """Why feature visualization does not apply to ``f`` on inputs like ``x`` (a phrase), or
    None when it does: it renders images (4-d batches) through ReLU sites with spatial or
    token axes."""
    if np.ndim(x) != 4:
        return (f"renders images (4-d batches, NHWC or NCHW); the inputs are shaped "
                f"{np.shape(x)}")
    if not _spatial(f, x):
        return "needs a ReLU site with spatial or token axes; the model has none"
    return None


@dataclasses.dataclass(frozen=True)
class LayerResult:
    """Rendered channels of one site and how they compare with the data."""

    site: str
    images: np.ndarray      # (channels, h, w, input channels)
    value: np.ndarray       # (channels,) channel mean on the rendered image
    data_best: np.ndarray   # (channels,) the largest channel mean over the data set
    start: np.ndarray       # (channels,) the value at the first step


def render_layers(f, x_data, *, key, steps, layers=LAYERS, groups=4, nmf_steps=300,
                  jitter=True):
    """Render every channel of ``layers`` and the NMF groups of the last of them in one call.

    A channel objective is the direction of a unit vector, so every visualization here is a
    sum of one direction per site (zero on the other sites): all of them share one structure
    and render in a single vmapped, compiled call.

    ``x_data`` is in the model's own layout; a channels-first model is explained through its
    NHWC view (:func:`jaxplain.core._channels.channels_last_view`), so the images come back
    NHWC, ready to draw.

    Returns ``(layer_results, groups_result, group_images)``.
    """
    x_data = jnp.asarray(x_data)
    f, axis = channels_last_view(f, x_data[:1])
    if axis is not None:
        x_data = jnp.moveaxis(x_data, axis, -1)
    shape = (1, *x_data.shape[1:])
    sites, group_site = tuple(layers), layers[-1]
    _, acts = capture(f, list(sites))(x_data)
    width = {s: acts[s].shape[-1] for s in sites}
    grp = neuron_groups(f, x_data, site=group_site, groups=groups, key=jax.random.fold_in(key, 1),
                        steps=nmf_steps)

    def combo(site, vector):
        return sum(direction(s, vector if s == site else jnp.zeros(width[s])) for s in sites)

    objectives = [combo(s, jnp.eye(width[s])[i]) for s in layers for i in range(width[s])]
    objectives += [combo(group_site, d) for d in grp.directions]
    transforms = (Jitter(1),) if jitter else ()
    with warnings.catch_warnings():  # dead channels are reported per layer (LayerResult.start)
        warnings.filterwarnings("ignore", message="render: objectives .* stayed exactly 0")
        out = render(f, objectives, key=key, shape=shape, steps=steps, param=Fourier(std=0.5),
                     transforms=transforms, regularizers=(TotalVariation(0.002),),
                     learning_rate=0.1)
    images = np.asarray(out.images[:, 0])
    value, start = np.asarray(out.value), np.asarray(out.trace[:, 0])
    results, at = [], 0
    for s in layers:
        n = width[s]
        best = np.asarray(jnp.mean(acts[s], axis=tuple(range(1, acts[s].ndim - 1))).max(axis=0))
        results.append(LayerResult(s, images[at:at + n], value[at:at + n], best,
                                   start[at:at + n]))
        at += n
    return results, grp, images[at:]


def grid_figure(results, grp, group_images):
    """One row per layer (its channels) and one row of NMF groups."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxplain.report._display import show_input

    cols = max(max(len(r.images) for r in results), len(group_images))
    rows = len(results) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(0.9 * cols, 1.05 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, res in enumerate(results):
        for c, img in enumerate(res.images):
            show_input(axes[r, c], img, vmin=0, vmax=1)
            axes[r, c].set_title(f"{c}", fontsize=6)
        axes[r, 0].text(-0.5, 0.5, res.site, fontsize=7, ha="right", va="center",
                        transform=axes[r, 0].transAxes)
    for c, img in enumerate(group_images):
        show_input(axes[-1, c], img, vmin=0, vmax=1)
        top = np.argsort(-np.asarray(grp.directions[c]))[:3]
        axes[-1, c].set_title("ch " + ",".join(map(str, top)), fontsize=6)
    axes[-1, 0].text(-0.5, 0.5, f"NMF groups\n{grp.site}", fontsize=7, ha="right", va="center",
                     transform=axes[-1, 0].transAxes)
    fig.suptitle("Feature visualization (decorrelated Fourier, TV): each channel's preferred input",
                 fontsize=9)
    return fig


def summary_rows(results):
    rows = []
    for r in results:
        alive = r.start > 0
        beat = (r.value > r.data_best) & alive
        ratio = np.median(r.value[alive] / np.maximum(r.data_best[alive], 1e-8)) if alive.any() \
            else float("nan")
        rows.append([r.site, len(r.value), int(alive.sum()), int(beat.sum()), float(ratio)])
    return rows


def demo_section(ctx):
    """Render all channels of two layers and the NMF groups of the last (on the digits CNN:
    ``relu`` and the residual block)."""
    from jaxplain.report import Section

    steps = 48 if ctx.quick else 256
    x = jnp.asarray(ctx.data.x_test[: 100 if ctx.quick else 450])
    reason = not_applicable(ctx.f, ctx.data.x_test)  # the data's shape, not the slice's
    if reason:  # vectors, sequences: a note, as the transformers section gives, not a failure
        return Section(TITLE, text=f"Feature visualization {reason}, so it does not apply to "
                                   f"these {ctx.noun} (one is shaped {tuple(x.shape[1:])}).")
    layers = spatial_layers(ctx.f, x)
    results, grp, group_images = render_layers(ctx.f, x, key=ctx.key, steps=steps, layers=layers,
                                               jitter=not ctx.quick)
    rows = summary_rows(results)
    text = (f"Rendered every channel of {', '.join(layers)} ({steps} Adam steps, decorrelated "
            f"Fourier parameterization, {'' if ctx.quick else 'jitter, '}TV, one vmapped call); "
            + "; ".join(f"{r[0]}: {r[3]}/{r[2]} live channels beat all test {ctx.noun}"
                        for r in rows)
            + f". NMF of {layers[-1]} into {grp.directions.shape[0]} groups: relative "
            f"reconstruction error {float(grp.error):.3f}.")
    return (Section(TITLE, text=text)
            .with_table(["site", "channels", "live", "beat data max", "median value / data max"],
                        rows, caption="A channel is live if it is active at the start image; "
                                      "'beat data max': its rendered input activates it more "
                                      f"than any of the test {ctx.noun}.")
            .with_figure(grid_figure(results, grp, group_images),
                         caption="Rows: channels of each layer; last row: NMF neuron groups "
                                 "(top channels in the title)."))
