"""The attribution section of the report: heatmaps of every method on a few test examples."""

from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np


DEEPLIFT_SHAP_BASELINES = 8


def _methods(key, quick: bool, x, grad_cam_site, references, channels=None) -> dict:
    """``{column name: method(f, x, t)}``; `references` ``(m, ...)`` training examples are the
    baseline distribution of the SHAP methods; `channels` is the channel axis of one example
    (:func:`channel_axis`), which occlusion's windows and KernelSHAP's groups cover whole."""
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
    window, mask = patches(x.shape[1:], channels)
    label = "x".join(map(str, window))
    # windows overlapping by half: (2 * 4 - 1) ** 2 passes on any image, not (side - w + 1) ** 2
    stride = tuple(max(1, w // 2) for w in window)
    steps_label = "" if max(stride) == 1 else " step " + "x".join(map(str, stride))
    methods[f"occlusion {label}{steps_label}"] = lambda f, x, t: A.occlusion(
        f, x, t, window=window, stride=stride)
    coalitions = max(4 * samples, 2 * int(mask.max() + 1))  # determined: 2 per group or more
    methods[f"kernel shap {label} ({coalitions})"] = lambda f, x, t: A.kernel_shap(
        f, x, t, feature_mask=mask, key=key, samples=coalitions)
    if grad_cam_site is not None:
        methods[f"grad-cam {grad_cam_site}"] = lambda f, x, t: A.grad_cam(
            f, x, t, site=grad_cam_site)
        methods["grad-cam++"] = lambda f, x, t: A.grad_cam_plus_plus(f, x, t, site=grad_cam_site)
        methods["score-cam"] = lambda f, x, t: A.score_cam(f, x, t, site=grad_cam_site)
        methods["guided grad-cam"] = lambda f, x, t: A.guided_grad_cam(
            f, x, t, site=grad_cam_site)
    return methods


def channel_axis(f, x) -> int | None:
    """The channel axis of one example of the batch `x`, as the model's first convolution reads
    it (0 for NCW sequences and NCHW images, the last for NWC, NHWC and NDHWC); None without a
    convolution."""
    from jaxplain.core._channels import image_channel_axis

    axis = image_channel_axis(f, x)
    return None if axis is None or axis < 1 else axis - 1


def patches(shape, channels: int | None = None):
    """``(window, feature mask)`` for one example's ``shape``: patches over its spatial axes
    (all but the channel axis `channels`; None: the last), each covering whole positions (all
    channels together): runs of a sixteenth of a sequence's length, squares of a quarter of an
    image's side (2x2 on 8x8 digits: 16 groups), cubes of a quarter of a volume's side; or runs
    of a sixteenth of the features of a vector ``(d,)``. ``window`` has one size per spatial
    axis, in order, as :func:`jaxplain.attribution.occlusion` reads a shorter window (the
    channel axis covered whole); the mask holds the patch ids, row-major over the patches, with
    a size-1 channel axis (``(d,)`` for a vector)."""
    shape = tuple(shape)
    if len(shape) == 1:
        run = max(1, shape[0] // 16)
        return (run,), np.arange(shape[0]) // run
    axis = len(shape) - 1 if channels is None else channels
    spatial = shape[:axis] + shape[axis + 1:]
    side = max(1, min(spatial) // (16 if len(spatial) == 1 else 4))
    counts = tuple(-(-d // side) for d in spatial)
    mask = np.ravel_multi_index(tuple(np.indices(spatial) // side), counts)
    return (side,) * len(spatial), np.expand_dims(mask, axis)


def grad_cam_site(f, x, channels: int | None):
    """The last module site with the input's spatial layout ``(n, *spatial, c)`` (the kernel
    presents sites channels last) for images, and for sequences and volumes that a convolution
    reads (`channels`, their :func:`channel_axis`, not None); else None (no CAM: its map is
    resized onto the input's spatial axes)."""
    from jaxplain.core import sites

    if x.ndim not in (3, 4, 5) or (x.ndim != 4 and channels is None):
        return None
    spatial = [s.name for s in sites(f, x[:1]) if s.kind == "module" and len(s.shape) == x.ndim]
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
    channels = channel_axis(ctx.f, x)
    methods = _methods(ctx.key, ctx.quick, x, grad_cam_site(ctx.f, x, channels), references,
                       channels)
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

    def shown(v):  # drawn channels last: positions left to right for NCW sequences
        v = np.asarray(v)
        return v if channels is None else np.moveaxis(v, channels + 1, -1)

    return (Section("Attribution", text=text)
            .with_table(header=["method", f"ms per example ({jax.default_backend().upper()}, "
                                "compiled)", "mean sum of attribution"], rows=rows,
                        caption=f"Median of {TIMING_REPEATS} compiled calls on the machine that "
                                "ran the report.")
            .with_figure(map_grid(shown(x), {k: shown(a) for k, a in maps.items()},
                                  np.asarray(target)),
                         caption=map_caption(shown(x).shape[1:])))


def map_caption(example_shape) -> str:
    """The caption of the attribution maps of inputs shaped ``example_shape`` (one example,
    channels last): channels are summed only for images and volumes (and depth for volumes);
    each panel is scaled to its own largest |value|."""
    colours = ("each panel scaled to its own largest absolute value, centred at zero: red "
               "positive, blue negative")
    if len(example_shape) == 4:
        return ("Volumes (depth, height, width, channels) projected along depth: the input's "
                f"mean over depth, each map summed over depth and channels ({colours}).")
    if len(example_shape) == 3:
        return f"Heatmaps summed over channels ({colours})."
    if len(example_shape) == 2 and example_shape[1] > 1:
        return (f"Maps of each ({example_shape[0]} positions, {example_shape[1]} channels) "
                f"input: one row per channel, positions left to right ({colours}).")
    if len(example_shape) == 2:
        return f"Attribution per position, position index under the bars ({colours})."
    return f"Attribution per feature, feature index under the bars ({colours})."
