"""Judge every attribution method on the digits CNN with the same metrics.

Writes ``experiments/results/metrics_digits.md`` and ``.json``:

1. the faithfulness table (deletion AUC MoRF / LeRF, insertion AUC, critical-pathways LeRF
   change, Gini sparseness, continuity) on test images, for the predicted class;
2. the cascading parameter-randomization sanity check (Spearman of |map| and SSIM per state);
3. with ``--roar``: ROAR and KAR accuracies (retraining the CNN for every fraction).

    python experiments/metrics_digits.py [--images 128] [--steps 32] [--roar] [--epochs 5]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--roar", action="store_true", help="also run ROAR/KAR (slow)")
    parser.add_argument("--roar-methods", default="gradient,integrated gradients,random (control)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--roar-fractions", default="0,0.1,0.3,0.5,0.7,0.9")
    parser.add_argument("--kar-fractions", default="0.1,0.3,0.5,0.7,0.9")
    parser.add_argument("--out", default="experiments/results/metrics_digits")
    args = parser.parse_args()

    from tqdm.auto import tqdm

    from jaxplain import data, metrics
    from jaxplain.core import as_function
    from jaxplain.metrics._demo import (attribution_methods, faithfulness_record,
                                        faithfulness_table, markdown_table)

    key = jax.random.key(args.seed)
    model, variables = data.pretrained()
    f = as_function(model, variables)
    digits = data.load_digits()
    x = jnp.asarray(digits.x_test[: args.images])
    target = jnp.argmax(f(x), axis=-1)
    methods = attribution_methods(jax.random.fold_in(key, 0))
    start = time.time()
    rows, _, failures = faithfulness_table(
        f, x, target, methods, key=jax.random.fold_in(key, 1), steps=args.steps,
        samples=args.samples, progress=lambda it, desc=None: tqdm(it, desc=desc),
    )
    faithfulness, faithfulness_md = faithfulness_record(rows, failures, time.time() - start)

    sanity = {}
    n_sanity = min(32, args.images)
    sanity_methods = [m for m in ("gradient", "gradient x input", "integrated gradients",
                                  "guided backprop", "deeplift") if m in methods]
    for name in tqdm(sanity_methods, desc="randomization"):
        r = metrics.randomization_check(model, variables, x[:n_sanity], methods[name],
                                        key=jax.random.fold_in(key, 2),
                                        target=target[:n_sanity])
        sanity[name] = {
            "states": list(r.states),
            **{m: [round(float(v), 4) for v in getattr(r, m).mean(1)]
               for m in ("spearman", "spearman_abs", "ssim")},
        }

    retrain = {}
    if args.roar:
        for name in args.roar_methods.split(","):
            if name not in methods:
                continue
            kw = dict(key=jax.random.fold_in(key, 3), f=f, digits=digits, epochs=args.epochs)
            r = metrics.roar(methods[name], fractions=_floats(args.roar_fractions), **kw)
            k = metrics.kar(methods[name], fractions=_floats(args.kar_fractions), **kw)
            retrain[name] = {
                kind: {round(float(q), 3): round(float(acc), 4)
                       for q, acc in zip(res.fractions, res.accuracy)}
                for kind, res in (("roar", r), ("kar", k))
            }
            print(name, retrain[name])

    device = jax.devices()[0]
    result = {
        "images": args.images, "steps": args.steps, "samples": args.samples,
        "device": f"{device.platform} ({device.device_kind})",
        "faithfulness": faithfulness,
        "randomization": sanity,
        "retrain": retrain,
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")

    md = [f"# Explanation metrics on the digits CNN ({args.images} test images, "
          f"{device.platform})", "",
          "## Faithfulness, sparseness, continuity", "", *faithfulness_md]
    md += [f"## Cascading parameter randomization (mean over {n_sanity} images; top layer first)",
           ""]
    for name, s in sanity.items():
        md += [f"**{name}**", "", markdown_table(["measure", *s["states"]],
               [["spearman", *s["spearman"]], ["spearman |.|", *s["spearman_abs"]],
                ["ssim", *s["ssim"]]]), ""]
    if retrain:
        md += [f"## ROAR / KAR (test accuracy, {args.epochs} epochs per retraining)", ""]
        for name, r in retrain.items():
            md += [f"**{name}**", "",
                   markdown_table(["q", *map(str, r["roar"])], [["ROAR", *r["roar"].values()]]), "",
                   markdown_table(["q", *map(str, r["kar"])], [["KAR", *r["kar"].values()]]), ""]
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
