"""The NeuroChains section of ``jaxplain demo``: a sub-network for a pair of digit classes."""

from __future__ import annotations

import numpy as np

from jaxplain import subnet

#: The default model's scored sites: the convolutions and the hidden dense layer.
SITES = ("conv1", "block1/conv_a", "block1/conv_b", "fc1")
PAIR = (3, 8)


def demo_section(ctx):
    """Extracts the sparsest sub-network keeping all region labels, for digits 3 vs 8."""
    import matplotlib

    matplotlib.use("Agg")
    from jaxplain.report import Section

    y = np.asarray(ctx.data.y_test)
    idx = [np.flatnonzero(y == c) for c in PAIR]
    region = np.concatenate([i[:10] for i in idx])
    unseen = np.concatenate([i[10:] for i in idx])
    x, xu = ctx.data.x_test[region], ctx.data.x_test[unseen]
    if ctx.quick:
        options = {"l1": 1e-2, "threshold": 0.05, "steps": 150, "finetune_steps": 50}
    else:
        options = {"l1": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)}
    for _ in ctx.progress([0], desc="NeuroChains sub-network"):
        sub = subnet.extract(ctx.f, x, sites=list(SITES), key=ctx.key, **options)
    m = subnet.evaluate(ctx.f, sub, x, xu, y_region=ctx.data.y_test[region],
                        y_unseen=ctx.data.y_test[unseen], classes=PAIR)
    rows = [[n, f"{k}/{t}", f"{float(sub.gates[n]):.2f}"]
            for (n, k), t in zip(sub.kept_units.items(), sub.total_units.values())]
    text = (
        f"NeuroChains (Zhao et al., ICLR 2021 submission / TMLR 2022): a sub-network of exact "
        f"filter copies for digits {PAIR[0]} vs {PAIR[1]} (region: 20 test images), found by "
        f"optimising one score per unit and one gate per layer (KL to the full net + L1), then "
        f"thresholding and fine-tuning the scores.\n"
        f"Kept {m['kept_units']}/{m['total_units']} units ({100 * m['removed']:.1f}% removed), "
        f"{m['kept_layers']}/{m['total_layers']} layers; label agreement with the full net "
        f"{100 * m['region_agreement']:.0f}% on the region (KL {m['region_kl']:.3f}) and "
        f"{100 * m['unseen_agreement']:.1f}% on {len(unseen)} unseen images of the same classes "
        f"(KL {m['unseen_kl']:.3f}); 2-class accuracy on them {100 * m['unseen_accuracy_restricted']:.1f}%"
        f" (full net {100 * m['unseen_accuracy_full']:.1f}%).")
    return (Section("Sub-network (NeuroChains)", text=text)
            .with_table(header=["site", "kept units", "gate"], rows=rows,
                        caption="Kept units per scored site and the layer gates.")
            .with_figure(subnet.plot_chain(sub), caption="The chain: kept units per layer, "
                         "coloured by gate x score.")
            .with_figure(subnet.plot_feature_maps(ctx.f, sub, x[::5]),
                         caption="Feature maps of the kept filters on region images."))
