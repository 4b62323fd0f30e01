"""The rules section of the report: ExplaiNN rules between two ReLU layers."""

from __future__ import annotations

import numpy as np

from jaxplain.rules._binarize import activations
from jaxplain.rules._ruleset import rule_rows, specificity
from jaxplain.rules._search import mine


def rule_layers(f, x, *, dense_quantile=0.75, batch_size=256):
    """Binarized items ``{site: ...}`` of two ReLU sites: the last spatial (NHWC) one and the
    last dense one, or the last two when the model has no spatial ReLU site.

    Conv filters are on above their 0.9-quantile of max-pooled activation (the design notes'
    default). The live dense units of the digits CNN are on (> 0) in ~80% of the samples, too
    dense for any conv -> dense rule to compress (docs/rules.md, "Which choices are ours"), so
    here a unit is on above its ``dense_quantile`` (our choice; ``None`` gives the design
    notes' > 0). Returns the items, the two site names and the ``Binarized`` results.

    Raises:
        ValueError: If the model has fewer than two ReLU sites (:func:`not_applicable`).
    """
    import jax.numpy as jnp

    from jaxplain.core import relu_sites, sites

    reason = not_applicable(f, x)
    if reason:
        raise ValueError(f"rules {reason}; mine items of your own with jaxplain.rules.mine.")
    probe = jnp.asarray(x[:2])
    shapes = {s.name: s.shape for s in sites(f, probe)}
    relus = relu_sites(f, probe)
    spatial = [s for s in relus if len(shapes[s]) >= 3]   # conv maps, 1-D or 2-D
    dense = [s for s in relus if len(shapes[s]) == 2]
    pair = (spatial[-1], dense[-1]) if spatial and dense else tuple(relus[-2:])
    # quantile= is for the non-conv sites; a pair of conv maps has none (activations raises).
    if all(len(shapes[s]) >= 3 for s in pair):
        dense_quantile = None
    bins = activations(f, x, list(pair), batch_size=batch_size, quantile=dense_quantile)
    return {name: bins[name].items for name in pair}, pair, bins


def not_applicable(f, x) -> str | None:
    """Why the report's rules do not apply to ``f`` on inputs like ``x`` (a phrase), or None
    when they do: they are mined from one ReLU site to another."""
    import jax.numpy as jnp

    from jaxplain.core import relu_sites

    relus = relu_sites(f, jnp.asarray(x[:2]))
    if len(relus) < 2:
        return (f"are mined between two ReLU sites; the model has {len(relus)} "
                f"({', '.join(relus) or 'none'})")
    return None


def rules_figure(rule_set, layers, x, labels, *, top=6):
    """For each of the top rules: the mean input image of its usage rows (titled with the sizes
    of its head X and tail Y) and its class histogram (rows per class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxplain.report._display import show_input

    shown = rule_set.rules[:top]
    fig, axes = plt.subplots(2, max(len(shown), 1), figsize=(2.2 * max(len(shown), 1), 4.4),
                             squeeze=False)
    classes = int(labels.max()) + 1
    for i, rule in enumerate(shown):
        rows = rule_rows(rule, layers)
        show_input(axes[0, i], np.asarray(x)[rows].mean(axis=0))
        axes[0, i].set_title(f"rule {i}\n|X|={len(rule.head)} -> |Y|={len(rule.tail)}",
                             fontsize=8)
        axes[0, i].axis("off")
        axes[1, i].bar(np.arange(classes), np.bincount(labels[rows], minlength=classes))
        axes[1, i].set_xticks(np.arange(classes))
        axes[1, i].tick_params(labelsize=6)
        axes[1, i].set_xlabel("class", fontsize=7)
    axes[1, 0].set_ylabel("rows using the rule", fontsize=7)
    fig.suptitle("ExplaiNN rules X -> Y (|X|, |Y|: items in the head, the tail): mean input "
                 "of the rows using each rule, and their classes", fontsize=9)
    fig.tight_layout()
    return fig


def _described(f, x, name) -> str:
    from jaxplain.core import sites

    rank = next(len(s.shape) for s in sites(f, x[:1]) if s.name == name)
    what = ("one item per filter, on above its 0.9-quantile of max-pooled activation"
            if rank >= 3 else "one item per unit, on above its 0.75-quantile")
    return f"site {name!r} ({what})"


#: A rule with at least this share of its rows in one class is class-specific; one with less
#: than ``SHARED`` is shared across classes (the thresholds of docs/rules.md's results).
SPECIFIC, SHARED = 0.9, 0.6


def specificity_text(rules, spec) -> str:
    """One sentence on how class-specific the rules are: how many are specific and shared, the
    most class-specific rule unless it is itself shared, and the most shared rule only when
    one is below ``SHARED`` (so no rule is named both, and no rule of 100% is called shared)."""
    spec = np.asarray(spec, dtype=np.float64)
    i, j = int(np.argmax(spec)), int(np.argmin(spec))
    n_specific, n_shared = int(np.sum(spec >= SPECIFIC)), int(np.sum(spec < SHARED))
    parts = [f"{n_specific} of {len(spec)} rules have at least {SPECIFIC:.0%} of their rows in "
             f"one class, {n_shared} less than {SHARED:.0%} (shared across classes)."]
    if spec[i] >= SHARED:
        parts.append(f"Most class-specific rule: {rules[i]} ({spec[i]:.0%} of its rows in one "
                     "class).")
    if spec[j] < SHARED:
        parts.append(f"Most shared: {rules[j]} ({spec[j]:.0%} in its most frequent class).")
    return " ".join(parts)


def demo_section(ctx):
    """Mine rules from the last spatial ReLU site (filters, 0.9-quantile) to the last dense one
    (on the digits: the conv block to fc1)."""
    from jaxplain.report import Section

    x, y = np.asarray(ctx.data.x_train), np.asarray(ctx.data.y_train)
    if ctx.quick:
        x, y = x[:400], y[:400]
    reason = not_applicable(ctx.f, x)
    if reason:  # an MLP with one hidden layer: a note, as feature visualization gives, not a failure
        return Section("Rules (ExplaiNN)", text=f"ExplaiNN rules {reason}, so they do not apply "
                                                "to this model.")
    layers, (head, tail), _ = rule_layers(ctx.f, x)
    options = dict(k_tail=16, beam=8, k_head=4, max_rules=4) if ctx.quick else dict(
        k_tail=32, beam=64, k_head=8, max_rules=20)
    from jaxplain.report._context import no_progress

    rule_set = mine(layers, labels=y, batch_size=32, progress=ctx.progress is not no_progress,
                    **options)
    spec = specificity(rule_set) if len(rule_set) else np.zeros(0)
    lines = [f"Rules X -> Y from {_described(ctx.f, x, head)} to {_described(ctx.f, x, tail)}, "
             f"mined on {len(x)} training {ctx.noun} by MDL.",
             f"{len(rule_set)} rules compress the activations to {rule_set.compression:.1f}% "
             "of the independent code."]
    if len(rule_set):
        lines.append(specificity_text(rule_set.rules, spec))
    text = "\n".join(lines)
    table = rule_set.to_table()
    section = Section("Rules (ExplaiNN)", text=text).with_table(
        header=table.header, rows=table.rows[:10],
        caption="Top rules in acceptance order; classes = share of the rows using the rule.")
    if len(rule_set):
        section = section.with_figure(rules_figure(rule_set, layers, x, y),
                                      caption="Mean input and class histogram of each rule's rows.")
    return section
