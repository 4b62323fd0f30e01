"""The attribution section of ``jaxplain demo``: heatmaps of every method on a few digits."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np


def _methods(key, quick: bool) -> dict:
    from jaxplain import attribution as A
    from jaxplain.lrp import EpsilonPlusFlat

    steps, samples = (16, 8) if quick else (50, 32)
    return {
        "gradient": lambda f, x, t: A.gradient(f, x, t),
        "gradient x input": lambda f, x, t: A.gradient_x_input(f, x, t),
        f"integrated gradients ({steps})": lambda f, x, t: A.integrated_gradients(f, x, t, steps=steps),
        f"smoothgrad ({samples})": lambda f, x, t: A.smoothgrad(f, x, t, key=key, samples=samples),
        "deeplift": lambda f, x, t: A.deeplift(f, x, t),
        "guided backprop": lambda f, x, t: A.guided_backprop(f, x, t),
        "lrp eps-plus-flat": lambda f, x, t: A.lrp(f, x, t, rules=EpsilonPlusFlat()),
        "occlusion 2x2": lambda f, x, t: A.occlusion(f, x, t, window=(2, 2)),
        f"kernel shap 2x2 ({4 * samples})": lambda f, x, t: A.kernel_shap(
            f, x, t, feature_mask=_superpixels(), key=key, samples=4 * samples),
        "grad-cam block1": lambda f, x, t: A.grad_cam(f, x, t, site="block1"),
    }


def _superpixels():
    """2x2-pixel superpixels of an 8x8 digit: 16 groups."""
    return (np.arange(8)[:, None] // 2 * 4 + np.arange(8)[None, :] // 2)[:, :, None]


def _figure(x, maps: dict, labels):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(maps)
    rows, cols = x.shape[0], len(names) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows), squeeze=False)
    for i in range(rows):
        axes[i, 0].imshow(x[i, ..., 0], cmap="gray")
        axes[i, 0].set_ylabel(f"class {labels[i]}", fontsize=7)
        for j, name in enumerate(names, start=1):
            a = np.asarray(maps[name][i]).sum(axis=-1)
            bound = max(np.abs(a).max(), 1e-12)
            axes[i, j].imshow(a, cmap="bwr", vmin=-bound, vmax=bound)
        if i == 0:
            axes[i, 0].set_title("input", fontsize=7)
            for j, name in enumerate(names, start=1):
                axes[i, j].set_title(name, fontsize=6)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def demo_section(ctx):
    """A grid of heatmaps (one column per method, red positive, blue negative) for a few test
    digits, with the time per image and the completeness of the methods that promise it."""
    from jaxplain import attribution as A
    from jaxplain.report import Section

    n = 4 if ctx.quick else 8
    x = jnp.asarray(ctx.digits.x_test[:n])
    target = jnp.argmax(ctx.f(x), axis=-1)
    maps, rows = {}, []
    for name, method in ctx.progress(list(_methods(ctx.key, ctx.quick).items()),
                                     desc="attribution: methods"):
        a = jax.block_until_ready(method(ctx.f, x, target))  # compiles
        start = time.perf_counter()
        a = jax.block_until_ready(method(ctx.f, x, target))
        ms = 1000 * (time.perf_counter() - start) / n
        maps[name] = a
        total = np.asarray(a).reshape(n, -1).sum(axis=1)
        rows.append([name, f"{ms:.2f}", f"{total.mean():+.4f}"])
    logits = np.asarray(ctx.f(x))[np.arange(n), np.asarray(target)]
    base = np.asarray(ctx.f(jnp.zeros_like(x)))[np.arange(n), np.asarray(target)]
    ig_name = next(k for k in maps if k.startswith("integrated"))
    ig_delta = np.abs(np.asarray(A.completeness_delta(ctx.f, x, target, maps[ig_name]))).max()
    dl_delta = np.abs(np.asarray(A.completeness_delta(ctx.f, x, target, maps["deeplift"]))).max()
    text = "\n".join([
        f"Attributions of the predicted class for {n} test digits with {len(maps)} methods.",
        f"Completeness (sum of attributions vs f(x) - f(0), mean {np.mean(logits - base):.3f}): "
        f"integrated gradients max |delta| {ig_delta:.2e}, DeepLIFT {dl_delta:.2e}.",
        "LRP (one-hot output relevance) sums to about 1 per image when relevance is conserved: "
        f"mean {float(np.asarray(maps['lrp eps-plus-flat']).reshape(n, -1).sum(1).mean()):.3f}.",
    ])
    return (Section("Attribution", text=text)
            .with_table(header=["method", "ms per image (CPU, compiled)", "mean sum of attribution"],
                        rows=rows, caption="Second call (compiled) timings on the demo machine.")
            .with_figure(_figure(np.asarray(x), maps, np.asarray(target)),
                         caption="Heatmaps summed over channels (red positive, blue negative)."))
