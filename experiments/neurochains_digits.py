"""NeuroChains on the embedded digits CNN: sub-networks for several class pairs.

For each pair of classes the region is the first 10 test images of each class (20 images); the
unseen set is the remaining test images of the same two classes. Two settings per pair:
"sparsest@100%" (the default: the sparsest sub-network whose region labels all agree) and
"sparsity 0.9" (at least 90% of units removed, the most faithful such sub-network). Writes
``experiments/results/neurochains_digits.{md,json}`` and one chain diagram per pair.

Run: ``python experiments/neurochains_digits.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")

import jaxplain as jp  # noqa: E402
from jaxplain import data, subnet  # noqa: E402

SITES = ["conv1", "block1/conv_a", "block1/conv_b", "fc1"]
PAIRS = [(3, 8), (0, 1), (4, 9), (5, 6), (2, 7), (1, 7)]
L1 = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
OUT = os.path.join(os.path.dirname(__file__), "results")


def main(quick: bool = False) -> None:
    os.makedirs(OUT, exist_ok=True)
    model, variables = data.pretrained(progress=False)
    f = jp.as_function(model, variables)
    d = data.load_digits()
    y = np.asarray(d.y_test)
    pairs = PAIRS[:2] if quick else PAIRS
    steps = {"steps": 300, "finetune_steps": 100} if quick else {}
    rows = []
    for pair in pairs:
        idx = [np.flatnonzero(y == c) for c in pair]
        region = np.concatenate([i[:10] for i in idx])
        unseen = np.concatenate([i[10:] for i in idx])
        for setting, options in (("sparsest@100%", {}), ("sparsity 0.9", {"sparsity": 0.9})):
            start = time.time()
            sub = jax.block_until_ready(subnet.extract(
                f, d.x_test[region], sites=SITES, key=jax.random.key(0), l1=L1, **options,
                **steps))
            seconds = time.time() - start  # the first pair's includes compiling
            m = subnet.evaluate(f, sub, d.x_test[region], d.x_test[unseen],
                                y_region=d.y_test[region], y_unseen=d.y_test[unseen],
                                classes=pair)
            rows.append({"pair": list(pair), "setting": setting, "seconds": round(seconds, 1),
                         "l1": float(sub.l1), "kept_per_site": sub.kept_units,
                         **{k: (round(v, 4) if isinstance(v, float) else v)
                            for k, v in m.items()}})
            print(rows[-1], flush=True)
            if setting == "sparsest@100%":
                tag = f"{pair[0]}{pair[1]}"
                fig = subnet.plot_chain(sub, title=f"digits {pair[0]} vs {pair[1]}: "
                                        f"{m['kept_units']}/{m['total_units']} units kept, "
                                        f"region agreement {100 * m['region_agreement']:.0f}%")
                fig.savefig(os.path.join(OUT, f"neurochains_chain_{tag}.png"), dpi=90,
                            bbox_inches="tight")
                if pair == pairs[0]:
                    fig = subnet.plot_feature_maps(f, sub, d.x_test[region][::5])
                    fig.savefig(os.path.join(OUT, f"neurochains_maps_{tag}.png"), dpi=90,
                                bbox_inches="tight")
                matplotlib.pyplot.close("all")
    with open(os.path.join(OUT, "neurochains_digits.json"), "w") as fh:
        json.dump({"device": jax.devices()[0].device_kind, "sites": SITES, "l1_grid": L1,
                   "rows": rows}, fh, indent=1)
    header = ("| pair | setting | removed | kept units | kept layers | region agree | region KL "
              "| unseen agree | unseen KL | unseen acc (2-class) | full acc unseen | l1 | s |")
    lines = [header, "|" + "---|" * 13]
    for r in rows:
        lines.append(
            f"| {r['pair'][0]} vs {r['pair'][1]} | {r['setting']} | {100 * r['removed']:.1f}% "
            f"| {r['kept_units']}/{r['total_units']} | {r['kept_layers']}/{r['total_layers']} "
            f"| {100 * r['region_agreement']:.0f}% | {r['region_kl']:.3f} "
            f"| {100 * r['unseen_agreement']:.1f}% | {r['unseen_kl']:.3f} "
            f"| {100 * r['unseen_accuracy_restricted']:.1f}% "
            f"| {100 * r['unseen_accuracy_full']:.1f}% | {r['l1']:g} | {r['seconds']} |")
    for setting in ("sparsest@100%", "sparsity 0.9"):
        sel = [r for r in rows if r["setting"] == setting]
        removed = np.array([r["removed"] for r in sel])
        agree = np.array([r["region_agreement"] for r in sel])
        unseen = np.array([r["unseen_agreement"] for r in sel])
        lines.append(f"\n{setting}: removed {100 * removed.mean():.1f} +- {100 * removed.std():.1f}%, "
                     f"region agreement {100 * agree.mean():.1f}%, unseen agreement "
                     f"{100 * unseen.mean():.1f} +- {100 * unseen.std():.1f}% over {len(sel)} pairs")
    text = ("# NeuroChains on the digits CNN\n\nRegion: 10 + 10 test images of a class pair; "
            f"unseen: the other test images of the pair. Sites: {', '.join(SITES)} (112 units). "
            f"L1 grid {L1}. Device: {jax.devices()[0].device_kind}.\n\n" + "\n".join(lines) + "\n")
    with open(os.path.join(OUT, "neurochains_digits.md"), "w") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="two pairs, fewer steps")
    main(parser.parse_args().quick)
