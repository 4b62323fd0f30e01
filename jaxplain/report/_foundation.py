"""The demo's first section: the data, the model's training and accuracy, and its sites."""

from __future__ import annotations

import math

import numpy as np

from jaxplain.report._context import DemoContext
from jaxplain.report._display import show_input
from jaxplain.report._section import Section
from jaxplain.report._user import same_sets


def demo_section(ctx: DemoContext) -> Section:
    """Sample examples, the training curve, the test accuracy and the table of the model's
    sites."""
    import jax

    import jaxplain

    data = ctx.data
    x_test, y_test = np.asarray(data.x_test), np.asarray(data.y_test)
    predicted = np.argmax(np.asarray(jax.jit(ctx.f)(data.x_test)), axis=-1)
    sites = jaxplain.sites(ctx.f, data.x_test[:1])
    if ctx.labelled:
        accuracy = (f"test accuracy {float(np.mean(predicted == y_test)):.2%} "
                    f"({int(np.sum(predicted != y_test))} errors)")
        caption = (f"Top: the first ten test {ctx.noun}. Bottom: up to ten misclassified test "
                   f"{ctx.noun} (red). Titles read label / prediction.")
    else:
        accuracy = "test accuracy n/a (labels are the model's predictions)"
        caption = (f"Top: the first ten test {ctx.noun}, titled with the model's prediction. "
                   "Bottom: no errors to show, as the data have no labels.")
    size = (f"{x_test.shape[0]} {ctx.noun}, both the training and the test set"
            if same_sets(data) else
            f"{data.x_train.shape[0]} training / {x_test.shape[0]} test {ctx.noun}")
    text = (
        f"{type(ctx.model).__name__} on {ctx.name} "
        f"({size}): "
        f"{accuracy}.\n"
        f"{len(sites)} sites: " + ", ".join(s.name for s in sites) + "."
    )
    section = Section("The model and its sites", text=text)
    section = section.with_figure(
        _samples_figure(x_test, y_test, predicted, labelled=ctx.labelled), caption=caption)
    if ctx.history is not None:
        section = section.with_figure(
            _history_figure(ctx.history), caption="Training loss and accuracy per epoch."
        )
    rows = [
        [s.name, s.kind, s.op, "x".join(map(str, s.shape[1:])), math.prod(s.shape[1:])]
        for s in sites
    ]
    section = section.with_table(
        header=["site", "kind", "op", "shape (per example)", "units"],
        rows=rows,
        caption="jaxplain.sites(f, x): every named intermediate value, in evaluation order.",
    )
    return section.with_figure(_sites_figure(sites), caption="Units per example at each site.")


def _samples_figure(x, y, predicted, cols: int = 10, *, labelled: bool = True):
    """Two rows: the first `cols` examples, then up to `cols` misclassified ones; an empty
    second row says why ("no errors", or "no labels" when the labels are the predictions).
    Each example is drawn by `show_input`, as the report's other figures draw their inputs."""
    import matplotlib.pyplot as plt

    rows = [np.arange(min(cols, len(x))), np.flatnonzero(predicted != y)[:cols]]
    fig, axes = plt.subplots(2, cols, figsize=(cols * 0.9, 2.1), squeeze=False)
    for r, indices in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.axis("off")
            if c < len(indices):
                i = indices[c]
                show_input(ax, x[i])
                color = "black" if predicted[i] == y[i] else "red"
                title = f"{y[i]} / {predicted[i]}" if labelled else f"{predicted[i]}"
                ax.set_title(title, fontsize=8, color=color)
    if not len(rows[1]):
        note = ("no errors" if labelled
                else "no labels: the model's predictions stand in for them")
        axes[1, 0].text(0.0, 0.5, note, transform=axes[1, 0].transAxes, fontsize=9,
                        ha="left", va="center")
    return fig


def _history_figure(history):
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history.loss) + 1)
    fig, loss_ax = plt.subplots(figsize=(6, 3))
    loss_ax.plot(epochs, history.loss, "o-", color="tab:blue", label="training loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy", color="tab:blue")
    acc_ax = loss_ax.twinx()
    acc_ax.plot(epochs, history.train_accuracy, "s--", color="tab:orange", label="train accuracy")
    acc_ax.plot(epochs, history.test_accuracy, "^-", color="tab:green", label="test accuracy")
    acc_ax.set_ylabel("accuracy")
    low = min(history.train_accuracy + history.test_accuracy)
    acc_ax.set_ylim(max(0.0, low - 0.02), 1.0)
    handles = loss_ax.get_legend_handles_labels()[0] + acc_ax.get_legend_handles_labels()[0]
    loss_ax.legend(handles, [h.get_label() for h in handles], loc="center right", fontsize=8)
    fig.tight_layout()
    return fig


def _sites_figure(sites):
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colors = {"module": "tab:blue", "activation": "tab:orange", "add": "tab:green",
              "pool": "tab:purple", "linear": "tab:gray"}
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(sites) + 0.8))
    units = [math.prod(s.shape[1:]) for s in sites]
    ax.barh(range(len(sites)), units, color=[colors.get(s.kind, "tab:gray") for s in sites])
    ax.set_yticks(range(len(sites)), [f"{s.name}  {s.shape[1:]}" for s in sites], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("units per example")
    kinds = [k for k in colors if any(s.kind == k for s in sites)]
    ax.legend([Patch(color=colors[k]) for k in kinds], kinds, fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
