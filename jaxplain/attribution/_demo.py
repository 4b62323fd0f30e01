"""The attribution section of the report: heatmaps of every method on a few test examples."""

from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np


DEEPLIFT_SHAP_BASELINES = 8


def _methods(key, quick: bool, x, grad_cam_site, references) -> dict:
    """``{column name: method(f, x, t)}``; `references` ``(m, ...)`` training examples are the
    baseline distribution of the SHAP methods."""
    from jaxplain import attribution as A
    from jaxplain.lrp import EpsilonPlusFlat

    steps, samples = (16, 8) if quick else (50, 32)
    few = references[:DEEPLIFT_SHAP_BASELINES]
    methods = {
        "gradient": lambda f, x, t: A.gradient(f, x, t),
        "gradient x input": lambda f, x, t: A.gradient_x_input(f, x, t),
        f"integrated gradients ({steps})": lambda f, x, t: A.integrated_gradients(f, x, t, steps=steps),
        f"smoothgrad ({samples})": lambda f, x, t: A.smoothgrad(f, x, t, key=key, samples=samples),
        f"gradient shap ({samples}, {len(references)} train)": lambda f, x, t: A.gradient_shap(
            f, x, t, key=key, baselines=references, samples=samples),
        "deeplift": lambda f, x, t: A.deeplift(f, x, t),
        f"deeplift shap ({len(few)} train)": lambda f, x, t: A.deeplift_shap(
            f, x, t, baselines=few),
        "guided backprop": lambda f, x, t: A.guided_backprop(f, x, t),
        "lrp eps-plus-flat": lambda f, x, t: A.lrp(f, x, t, rules=EpsilonPlusFlat()),
    }
    window, mask = patches(x.shape[1:])
    label = "x".join(map(str, window))
    methods[f"occlusion {label}"] = lambda f, x, t: A.occlusion(f, x, t, window=window)
    methods[f"kernel shap {label} ({4 * samples})"] = lambda f, x, t: A.kernel_shap(
        f, x, t, feature_mask=mask, key=key, samples=4 * samples)
    if grad_cam_site is not None:
        methods[f"grad-cam {grad_cam_site}"] = lambda f, x, t: A.grad_cam(
            f, x, t, site=grad_cam_site)
        methods["grad-cam++"] = lambda f, x, t: A.grad_cam_plus_plus(f, x, t, site=grad_cam_site)
        methods["score-cam"] = lambda f, x, t: A.score_cam(f, x, t, site=grad_cam_site)
        methods["guided grad-cam"] = lambda f, x, t: A.guided_grad_cam(
            f, x, t, site=grad_cam_site)
    return methods


def patches(shape):
    """``(window, feature mask)`` for one example's ``shape``: square patches of a
    quarter of the image side (2x2 on 8x8 digits: 16 groups) shared by all channels, or runs of
    features of a vector."""
    if len(shape) == 3:
        h, w, _ = shape
        side = max(1, min(h, w) // 4)
        cols = -(-w // side)
        mask = (np.arange(h)[:, None] // side * cols + np.arange(w)[None, :] // side)[:, :, None]
        return (side, side), mask
    size = int(np.prod(shape))
    run = max(1, size // 16)
    return (run,), (np.arange(size) // run).reshape(shape)


def grad_cam_site(f, x):
    """The last module site with a spatial (NHWC) value, for images (NHWC) only, else None (no
    Grad-CAM: its map is resized to the input)."""
    from jaxplain.core import sites

    if x.ndim != 4:
        return None
    spatial = [s.name for s in sites(f, x[:1]) if s.kind == "module" and len(s.shape) == 4]
    return spatial[-1] if spatial else None


#: Compiled calls timed per method; the table shows their median (one call is noise).
TIMING_REPEATS = 3


def _seconds(method, f, x, target) -> float:
    start = time.perf_counter()
    jax.block_until_ready(method(f, x, target))
    return time.perf_counter() - start


def demo_section(ctx):
    """A grid of heatmaps (one column per method, red positive, blue negative) for a few test
    examples, with the time per example and the completeness of the methods that promise it."""
    from jaxplain import attribution as A
    from jaxplain.report import Section
    from jaxplain.report._display import map_grid

    n = 4 if ctx.quick else 8
    x = jnp.asarray(ctx.data.x_test[:n])
    target = jnp.argmax(ctx.f(x), axis=-1)
    maps, rows = {}, []
    pick = jax.random.choice(jax.random.fold_in(ctx.key, 2), len(ctx.data.x_train),
                             (min(32, len(ctx.data.x_train)),), replace=False)
    references = jnp.asarray(np.asarray(ctx.data.x_train)[np.asarray(pick)])
    methods = _methods(ctx.key, ctx.quick, x, grad_cam_site(ctx.f, x), references)
    for name, method in ctx.progress(list(methods.items()), desc="attribution: methods"):
        try:
            a = jax.block_until_ready(method(ctx.f, x, target))  # compiles
        except Exception as err:  # noqa: BLE001 - one method's failure on a user's model is
            # reported in its row; the other methods' maps still make the section
            warnings.warn(f"attribution: {name} failed on this model: {err}", stacklevel=2)
            rows.append([name, "failed", f"{type(err).__name__}: {str(err)[:120]}"])
            continue
        ms = 1000 * np.median([_seconds(method, ctx.f, x, target) for _ in range(TIMING_REPEATS)]) / n
        maps[name] = a
        total = np.asarray(a).reshape(n, -1).sum(axis=1)
        rows.append([name, f"{ms:.2f}", f"{total.mean():+.4f}"])
    logits = np.asarray(ctx.f(x))[np.arange(n), np.asarray(target)]
    base = np.asarray(ctx.f(jnp.zeros_like(x)))[np.arange(n), np.asarray(target)]
    found = lambda prefix: next((maps[k] for k in maps if k.startswith(prefix)), None)
    gaps = []
    for label, a in (("integrated gradients", found("integrated")), ("DeepLIFT", maps.get("deeplift"))):
        if a is not None:
            delta = np.abs(np.asarray(A.completeness_delta(ctx.f, x, target, a))).max()
            gaps.append(f"{label} max |delta| {delta:.2e}")
    lines = [f"Attributions of the predicted class for {n} test {ctx.noun} with {len(maps)} "
             "methods" + (f" ({len(rows) - len(maps)} failed on this model, see the table)."
                          if len(rows) > len(maps) else ".")]
    if gaps:
        lines.append(f"Completeness (sum of attributions vs f(x) - f(0), mean "
                     f"{np.mean(logits - base):.3f}): {', '.join(gaps)}.")
    if found("deeplift shap") is not None:
        few = references[:DEEPLIFT_SHAP_BASELINES]  # as the method ran: fewer in a small set
        mean_ref = np.asarray(ctx.f(few))[:, np.asarray(target)].mean(0)
        shap_delta = np.abs(np.asarray(found("deeplift shap")).reshape(n, -1).sum(1)
                            - (logits - mean_ref)).max()
        lines.append(f"DeepLIFT-SHAP against f(x) - mean f(b) over its {len(few)} "
                     f"training baselines: max |delta| {shap_delta:.2e}.")
    if found("lrp") is not None:
        lines.append(f"LRP (one-hot output relevance) sums to about 1 for each of the {ctx.noun} "
                     "when relevance is conserved: "
                     f"mean {float(np.asarray(found('lrp')).reshape(n, -1).sum(1).mean()):.3f}.")
    text = "\n".join(lines)
    return (Section("Attribution", text=text)
            .with_table(header=["method", f"ms per example ({jax.default_backend().upper()}, "
                                "compiled)", "mean sum of attribution"], rows=rows,
                        caption=f"Median of {TIMING_REPEATS} compiled calls on the machine that "
                                "ran the report.")
            .with_figure(map_grid(np.asarray(x), maps, np.asarray(target)),
                         caption=map_caption(x.shape[1:])))


def map_caption(example_shape) -> str:
    """The caption of the attribution maps of inputs shaped ``example_shape`` (one example):
    channels are summed only for images; each panel is scaled to its own largest |value|."""
    colours = ("each panel scaled to its own largest absolute value, centred at zero: red "
               "positive, blue negative")
    if len(example_shape) == 3:
        return f"Heatmaps summed over channels ({colours})."
    if len(example_shape) == 2 and example_shape[1] > 1:
        return (f"Maps of each ({example_shape[0]} positions, {example_shape[1]} channels) "
                f"input: one row per channel, positions left to right ({colours}).")
    if len(example_shape) == 2:
        return f"Attribution per position, position index under the bars ({colours})."
    return f"Attribution per feature, feature index under the bars ({colours})."
