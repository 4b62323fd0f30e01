"""Judge the transformer explanations on the embedded digits ViT with the faithfulness metrics.

Writes ``experiments/results/transformers_digits.md`` and ``.json``: for the predicted class of
test digits, the deletion AUC (most relevant first, lower is better; least relevant first,
higher is better), insertion AUC, the critical-pathways LeRF change, sparseness and continuity
of conservative propagation (Ali et al. 2022), AttnLRP (Achtibat et al. 2024), gradient x input, integrated gradients, LRP with
Zennit's EpsilonPlusFlat, attention rollout and gradient-weighted rollout (token maps spread
over their 2x2 patches), and a random control; plus how far each pixel method's sum is from the
logit (conservation).

    python experiments/transformers_digits.py [--images 128] [--steps 32]
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np


def _patch_map(tokens):
    """(n, 16) token relevance -> (n, 8, 8, 1): each value over its 2x2 patch."""
    grid = tokens.reshape(-1, 4, 4)
    return jnp.repeat(jnp.repeat(grid, 2, axis=1), 2, axis=2)[..., None]


def methods(key):
    from jaxplain import attribution as A
    from jaxplain.lrp import EpsilonPlusFlat

    def rollout(f, x, target):
        del target  # not class-specific
        return _patch_map(A.attention_rollout(f, x).mean(axis=1))

    def gradient_rollout(f, x, target):
        r = A.gradient_weighted_rollout(f, x, target)
        return _patch_map((r - jnp.eye(r.shape[-1])).mean(axis=1))

    def random_map(f, x, target):
        del f, target
        return jax.random.uniform(key, x.shape)

    return {
        "conservative propagation": A.conservative_propagation,
        "attnlrp": A.attn_lrp,
        "gradient x input": A.gradient_x_input,
        "integrated gradients": functools.partial(A.integrated_gradients, steps=32),
        "lrp eps-plus-flat": functools.partial(A.lrp, rules=EpsilonPlusFlat()),
        "attention rollout": rollout,
        "gradient-weighted rollout": gradient_rollout,
        "random (control)": random_map,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="experiments/results/transformers_digits")
    args = parser.parse_args()

    from tqdm.auto import tqdm

    from jaxplain import as_function, data
    from jaxplain.metrics._demo import faithfulness_record, faithfulness_table, markdown_table

    key = jax.random.key(args.seed)
    model, variables = data.pretrained(architecture="vit")
    f = as_function(model, variables)
    digits = data.load_digits()
    accuracy = data.accuracy(f, digits.x_test, digits.y_test)
    x = jnp.asarray(digits.x_test[: args.images])
    target = jnp.argmax(f(x), axis=-1)
    chosen = methods(jax.random.fold_in(key, 0))
    start = time.time()
    rows, _, failures = faithfulness_table(
        f, x, target, chosen, key=jax.random.fold_in(key, 1), steps=args.steps,
        samples=args.samples, progress=lambda it, desc=None: tqdm(it, desc=desc))
    faithfulness, faithfulness_md = faithfulness_record(rows, failures, time.time() - start)
    logit = np.asarray(f(x))[np.arange(args.images), np.asarray(target)]
    conservation = {}
    for name in ("conservative propagation", "attnlrp", "gradient x input", "integrated gradients",
                 "lrp eps-plus-flat"):
        total = np.asarray(chosen[name](f, x, target)).reshape(args.images, -1).sum(axis=1)
        reference = logit if name != "lrp eps-plus-flat" else np.ones_like(logit)  # one-hot start
        conservation[name] = float(np.median(np.abs(total - reference) / np.abs(reference)))
    device = jax.devices()[0]
    result = {
        "images": args.images, "steps": args.steps, "samples": args.samples,
        "device": f"{device.platform} ({device.device_kind})", "vit_test_accuracy": accuracy,
        "faithfulness": faithfulness,
        "conservation_median_relative_error": conservation,
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# Transformer explanations on the digits ViT ({args.images} test images, "
          f"{device.platform}; ViT test accuracy {accuracy:.1%})", "",
          "## Faithfulness, sparseness, continuity (predicted class)", "", *faithfulness_md]
    md += ["## Conservation (median over images of |sum of attribution - target| / |target|; "
           "the target is the logit, for LRP the one-hot output relevance 1)", "",
           markdown_table(["method", "median relative error"],
                          [[k, f"{v:.2e}"] for k, v in conservation.items()]), ""]
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
