"""The NeuroChains section of the report: a sub-network for a pair of classes."""

from __future__ import annotations

import numpy as np

from jaxplain import subnet

#: The default model's scored sites: the convolutions and the hidden dense layer.
SITES = ("conv1", "block1/conv_a", "block1/conv_b", "fc1")
PAIR = (3, 8)


def sites_and_pair(ctx) -> tuple[tuple[str, ...], tuple[int, int]] | str:
    """The default DigitsCNN: its convolutions and fc1; another model: every ReLU-like site
    (:func:`jaxplain.core.relu_sites`; one score per unit, which removes a filter where it
    follows a convolution); or why the section does not apply (no such site). The pair: digits
    3 vs 8 for the DigitsCNN where the data has at least 11 test examples of each (10 in the
    region), else the two classes with the most test examples (at least 11 each)."""
    from jaxplain.core import relu_sites
    from jaxplain.data import DigitsCNN

    y = np.asarray(ctx.data.y_test)
    classes, counts = np.unique(y, return_counts=True)
    count = dict(zip(classes.tolist(), counts.tolist()))
    digits = isinstance(ctx.model, DigitsCNN)
    if digits and min(count.get(c, 0) for c in PAIR) >= 11:
        return SITES, PAIR
    top = classes[np.argsort(-counts, kind="stable")[:2]]
    if len(top) < 2 or np.sort(counts)[-2] < 11:
        raise ValueError("a sub-network needs two classes with at least 11 test examples each; "
                         f"the counts are {count}.")
    pair = (int(top[0]), int(top[1]))
    if digits:
        return SITES, pair
    sites = relu_sites(ctx.f, ctx.data.x_test[:2])
    if not sites:
        return ("scores the units of ReLU-like activations (ReLU, ReLU6, leaky ReLU, hard tanh) "
                "here, and the model has none")
    return sites, pair


def demo_section(ctx):
    """Extracts the sparsest sub-network keeping all region labels for a pair of classes
    (digits 3 vs 8 in the demo; :func:`sites_and_pair`)."""
    import matplotlib

    matplotlib.use("Agg")
    from jaxplain.report import Section

    chosen = sites_and_pair(ctx)
    if isinstance(chosen, str):  # a note, as the rules section gives, not a failure
        return Section("Sub-network (NeuroChains)", text=f"The report's NeuroChains section "
                       f"{chosen}, so it does not apply to this model. Score other sites with "
                       "jaxplain.subnet.extract(f, x, sites=...), e.g. the GELU outputs.")
    sites, pair = chosen
    y = np.asarray(ctx.data.y_test)
    idx = [np.flatnonzero(y == c) for c in pair]
    region = np.concatenate([i[:10] for i in idx])
    unseen = np.concatenate([i[10:] for i in idx])
    x, xu = ctx.data.x_test[region], ctx.data.x_test[unseen]
    if ctx.quick:
        options = {"l1": 1e-2, "threshold": 0.05, "steps": 150, "finetune_steps": 50}
    else:
        options = {"l1": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)}
    from jaxplain.report._context import no_progress

    sub = subnet.extract(ctx.f, x, sites=list(sites), key=ctx.key,
                         progress=ctx.progress is not no_progress, **options)
    m = subnet.evaluate(ctx.f, sub, x, xu, y_region=ctx.data.y_test[region],
                        y_unseen=ctx.data.y_test[unseen], classes=pair)
    rows = [[n, f"{k}/{t}", f"{float(sub.gates[n]):.2f}"]
            for (n, k), t in zip(sub.kept_units.items(), sub.total_units.values())]
    text = (
        f"NeuroChains (Zhao et al., ICLR 2021 submission / TMLR 2022): a sub-network of exact "
        f"filter copies for classes {pair[0]} vs {pair[1]} (region: {len(region)} test {ctx.noun}), found by "
        f"optimising one score per unit and one gate per layer (KL to the full net + L1), then "
        f"thresholding and fine-tuning the scores.\n"
        f"Kept {m['kept_units']}/{m['total_units']} units ({100 * m['removed']:.1f}% removed), "
        f"{m['kept_layers']}/{m['total_layers']} layers; label agreement with the full net "
        f"{100 * m['region_agreement']:.0f}% on the region (KL {m['region_kl']:.3f}) and "
        f"{100 * m['unseen_agreement']:.1f}% on {len(unseen)} unseen {ctx.noun} of the same classes "
        f"(KL {m['unseen_kl']:.3f}); " + (
            f"2-class accuracy on them (arg-max over the 2 classes) "
            f"{100 * m['unseen_accuracy_restricted']:.1f}% (full net, the same way: "
            f"{100 * m['unseen_accuracy_full_restricted']:.1f}%)." if ctx.labelled else
            "2-class accuracy n/a (no labels: the classes and the region are the model's "
            "predictions)."))
    section = (Section("Sub-network (NeuroChains)", text=text)
               .with_table(header=["site", "kept units", "gate"], rows=rows,
                           caption="Kept units per scored site and the layer gates.")
               .with_figure(subnet.plot_chain(sub), caption="The chain: kept units per layer, "
                            "coloured by gate x score. Edges are schematic: every kept unit of a "
                            "layer to every kept unit of the next, not the model's connections "
                            "(a depthwise convolution joins a unit to one; skips not drawn)."))
    return section.with_figure(
        subnet.plot_feature_maps(ctx.f, sub, x[::5]),
        caption=f"The sub-network's values of its kept units on region {ctx.noun}: a map per "
                "kept filter of a spatial site, a line over the positions per kept filter of a "
                "1-D convolution, bars of the kept units of a dense site (ticks name them).")
