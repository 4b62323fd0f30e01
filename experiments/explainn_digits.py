"""ExplaiNN rules on the embedded digits CNN: class-specific vs shared rules and locality.

Run from the repository root: ``python experiments/explainn_digits.py``. Writes
experiments/results/explainn_digits.{md,json} and explainn_digits_rules.png,
explainn_digits_locality.png, explainn_digits_prototypes.png.

1. Filter mode: conv block output (one item per filter, max-pooled, > per-filter 0.9-quantile)
   -> fc1 (unit > its 0.75-quantile), with the class histogram of each rule's rows.
   For comparison, the count of rules with the spec's dense default (fc1 unit > 0).
2. Locality mode: fc1 -> conv block output with one item per (position, filter); for each rule
   the spatial spread of its tail positions vs random item sets of the same size.
3. Prototyping with rule neuron groups: activation maximization (jaxplain.visualize.render) of
   the summed tail Y of a rule (``rule_objective``) vs of each single tail neuron; how many of
   Y each image turns on.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxplain import data  # noqa: E402
from jaxplain.rules import activations, mine, rule_objective, specificity  # noqa: E402
from jaxplain.rules._demo import rule_layers, rules_figure  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def spread(items, shape):
    """Mean distance of the items' (row, col) positions to their centroid."""
    pos = np.stack(np.unravel_index(np.asarray(items), shape)[:2], axis=1).astype(float)
    return float(np.linalg.norm(pos - pos.mean(0), axis=1).mean())


def prototyping(f, rules, site, thresholds, plt, top=4):
    """Render the summed tail of each top rule and each of its single neurons; count how many
    tail neurons each rendering drives above their binarization threshold."""
    import jax

    import jaxplain as jp
    from jaxplain.visualize import channel, render

    captured = jax.jit(jp.capture(f, site))
    out, images = [], []
    for i, rule in enumerate(rules.rules[:top]):
        tail = np.asarray(rule.tail)
        key = jax.random.key(i)
        group = render(f, rule_objective(rule, {rule.tail_layer: site}), key=key,
                       shape=(1, 8, 8, 1), steps=200)
        singles = render(f, [channel(site, int(t)) for t in tail], key=key, shape=(1, 8, 8, 1),
                         steps=200)
        on = lambda img: int((np.asarray(captured(img)[1][site])[0, tail] > thresholds[tail]).sum())
        single_on = [on(singles.images[k]) for k in range(len(tail))]
        out.append(dict(rule=str(rule), tail=len(tail), group_image_tail_on=on(group.images),
                        single_images_tail_on_mean=float(np.mean(single_on)),
                        single_images_tail_on_max=int(max(single_on))))
        images.append((group.images[0, ..., 0], singles.images[0, 0, ..., 0], rule))
    if images:
        fig, axes = plt.subplots(2, len(images), figsize=(2.2 * len(images), 4.4), squeeze=False)
        for k, (grp, single, rule) in enumerate(images):
            axes[0, k].imshow(np.asarray(grp), cmap="gray")
            axes[0, k].set_title(f"rule {k}: group of {len(rule.tail)}", fontsize=7)
            axes[1, k].imshow(np.asarray(single), cmap="gray")
            axes[1, k].set_title(f"single unit {int(rule.tail[0])}", fontsize=7)
            for ax in axes[:, k]:
                ax.axis("off")
        fig.suptitle("Activation maximization: a rule's tail group vs one of its neurons",
                     fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(RESULTS, "explainn_digits_prototypes.png"), dpi=120)
        plt.close(fig)
    return out


def markdown(table):
    lines = ["| " + " | ".join(map(str, table.header)) + " |",
             "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.rows]
    return "\n".join(lines)


def main():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(RESULTS, exist_ok=True)
    digits = data.load_digits()
    f = data.digits_function()
    x, y = np.asarray(digits.x_train), np.asarray(digits.y_train)
    report = {"rows": int(len(x))}

    # 1. Filter mode with class histograms.
    layers, (conv, dense), bins = rule_layers(f, x)
    start = time.perf_counter()
    rules = mine(layers, labels=y, k_tail=32, beam=64, k_head=8, batch_size=32)
    report["filter_mode"] = dict(conv_site=conv, dense_site=dense, seconds=time.perf_counter()
                                 - start, rules=len(rules), compression_percent=rules.compression,
                                 density={k: float(v.mean()) for k, v in layers.items()})
    spec = specificity(rules)
    report["filter_mode"]["class_specific_rules(>=90% one class)"] = int((spec >= 0.9).sum())
    report["filter_mode"]["shared_rules(<60% one class)"] = int((spec < 0.6).sum())
    dense_default = activations(f, x, [dense], quantile=None)[dense].items
    plain = mine({conv: layers[conv], dense: dense_default}, k_tail=32, beam=64, k_head=8,
                 batch_size=32)
    report["filter_mode"]["rules_with_dense_default_gt0"] = len(plain)
    report["filter_mode"]["dense_default_density"] = float(dense_default.mean())
    fig = rules_figure(rules, layers, x, y, top=8)
    fig.savefig(os.path.join(RESULTS, "explainn_digits_rules.png"), dpi=120)
    plt.close(fig)

    # 2. Locality mode: fc1 -> (position, filter) items of the conv block.
    local = activations(f, x, [conv], locality=[conv])[conv]
    start = time.perf_counter()
    loc_rules = mine({dense: layers[dense], f"{conv} (local)": local.items},
                     pairs=[(dense, f"{conv} (local)")], labels=y, k_tail=32, beam=16, k_head=8,
                     max_rules=12, batch_size=32)
    rng = np.random.default_rng(0)
    on = np.flatnonzero(local.items.any(0) & ~local.items.all(0))
    spreads, randoms = [], []
    for rule in loc_rules.rules:
        spreads.append(spread(rule.tail, local.shape))
        randoms.append(np.mean([spread(rng.choice(on, len(rule.tail), replace=False),
                                       local.shape) for _ in range(200)]))
    report["locality_mode"] = dict(items=int(local.items.shape[1]), seconds=time.perf_counter()
                                   - start, rules=len(loc_rules),
                                   compression_percent=loc_rules.compression,
                                   mean_tail_spread=float(np.mean(spreads)) if spreads else None,
                                   mean_random_spread=float(np.mean(randoms)) if randoms else None)
    shown = loc_rules.rules[:6]
    if shown:
        fig, axes = plt.subplots(1, len(shown), figsize=(2.2 * len(shown), 2.6), squeeze=False)
        for ax, rule in zip(axes[0], shown):
            grid = np.zeros(local.shape[:2])
            rr, cc, _ = np.unravel_index(rule.tail, local.shape)
            np.add.at(grid, (rr, cc), 1)
            ax.imshow(grid, cmap="magma")
            ax.set_title(f"fc{rule.head.tolist()}\n{len(rule.tail)} items", fontsize=7)
            ax.axis("off")
        fig.suptitle("Locality: where each rule's tail (position, filter) items sit", fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(RESULTS, "explainn_digits_locality.png"), dpi=120)
        plt.close(fig)

    report["prototyping"] = prototyping(f, rules, dense, bins[dense].thresholds, plt)

    with open(os.path.join(RESULTS, "explainn_digits.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    with open(os.path.join(RESULTS, "explainn_digits.md"), "w") as fh:
        fh.write("# ExplaiNN rules on the digits CNN\n\n")
        fh.write(f"```\n{json.dumps(report, indent=2)}\n```\n\n## Filter mode\n\n")
        fh.write(markdown(rules.to_table()) + "\n\n## Locality mode (fc1 -> conv positions)\n\n")
        fh.write(markdown(loc_rules.to_table()) + "\n")
    print(json.dumps(report, indent=2))
    print(rules)


if __name__ == "__main__":
    main()
