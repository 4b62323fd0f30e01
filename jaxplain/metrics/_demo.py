"""The metrics section of the report: a faithfulness table for the attribution methods."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.metrics._compare import METRICS, compare, random_attribution
from jaxplain.metrics._faithfulness import deletion, insertion

TABLE_METRICS = ("deletion_morf", "deletion_lerf", "insertion", "lerf_change", "sparseness",
                 "continuity")
#: A map whose mean sparseness (Gini index) is below this is taken for constant.
CONSTANT_GINI = 1e-3


OCCLUSION = "occlusion 2x2"


def attribution_methods(key: jax.Array, *, quick: bool = False) -> dict[str, Callable[..., Any]]:
    """``{name: method(f, x, target)}`` for the attribution methods this install provides.

    Options are fixed here (IG with 32 Gauss-Legendre steps, SmoothGrad with 16 samples and
    stdev 0.15, 2x2 occlusion with stride 1 (the digits' window: :func:`fit_occlusion` fits it
    to other inputs), LRP with Zennit's EpsilonPlusFlat composite), and a uniform random map is
    added as a control. A method missing from :mod:`jaxplain.attribution` is left out;
    ``quick`` keeps the gradient, gradient x input and integrated gradients only.
    """
    from jaxplain import attribution as A

    samples = 8 if quick else 16

    def lrp():
        from jaxplain.lrp import EpsilonPlusFlat

        return functools.partial(A.lrp, rules=EpsilonPlusFlat())

    makers = {
        "gradient": lambda: A.gradient,
        "gradient x input": lambda: A.gradient_x_input,
        "integrated gradients": lambda: functools.partial(A.integrated_gradients, steps=32),
        "smoothgrad": lambda: functools.partial(A.smoothgrad, key=key, samples=samples),
        "deeplift": lambda: A.deeplift,
        "guided backprop": lambda: A.guided_backprop,
        OCCLUSION: lambda: functools.partial(A.occlusion, window=(2, 2), stride=1),
        "lrp (epsilon-plus-flat)": lrp,
    }
    if quick:
        makers = {k: makers[k] for k in ("gradient", "gradient x input", "integrated gradients")}
    methods = {}
    for name, make in makers.items():
        try:
            methods[name] = make()
        except (AttributeError, ImportError):
            continue
    methods["random (control)"] = random_attribution(jax.random.fold_in(key, 1))
    return methods


def fit_occlusion(methods: dict, shape) -> dict:
    """``methods`` with :func:`attribution_methods`' 2x2 occlusion replaced, in place in the
    order, by the window the attribution section uses for one example's ``shape`` (a quarter of
    the image side, 2x2 on the 8x8 digits; runs of 1/16 of the features of vectors and
    sequences), stride 1: a 2x2 window does not fit a vector."""
    if OCCLUSION not in methods:
        return methods
    from jaxplain import attribution as A
    from jaxplain.attribution._demo import patches

    window, _ = patches(tuple(shape))
    occlusion = functools.partial(A.occlusion, window=window, stride=1)
    name = "occlusion " + "x".join(map(str, window))
    return {name if k == OCCLUSION else k: occlusion if k == OCCLUSION else m
            for k, m in methods.items()}


def insertion_baseline(x, reference=None):
    """Where the insertion curve starts for inputs like ``x``: ``"blur"`` for NHWC images
    (RISE's blurred image); for other inputs (vectors, token embeddings), where a blur means
    nothing, the mean example of ``reference`` (default ``x``), an uninformative input of the
    data's own scale."""
    if np.ndim(x) == 4:
        return "blur"
    return jnp.mean(jnp.asarray(x if reference is None else reference), axis=0)


def faithfulness_table(f, x, target, methods, *, key, steps, samples, progress=None,
                       baseline_insertion=None):
    """Rows ``[method, *metric means]`` (a failing method gets a row of its error) and curves.

    ``baseline_insertion`` is the insertion metric's start (``None``:
    :func:`insertion_baseline` of ``x``); the other metrics are :func:`compare`'s.
    """
    progress = progress or (lambda it, desc=None: it)
    if baseline_insertion is None:
        baseline_insertion = insertion_baseline(x)
    others = tuple(m for m in TABLE_METRICS if m != "insertion")
    rows, curves, failures = [], {}, {}
    for name in progress(list(methods), desc="metrics: methods"):
        method = methods[name]
        try:
            table = compare(f, x, target, {name: method}, others, key=key, steps=steps,
                            samples=samples)
            a = method(f, x, target)
            values = dict(zip(others, table.rows[0][1:]))
            values["insertion"] = float(jnp.mean(insertion(
                f, x, target, a, steps=steps, baseline=baseline_insertion).area))
            curves[name] = np.asarray(deletion(f, x, target, a, steps=steps).values.mean(0))
        except Exception as e:  # noqa: BLE001 - one failing method must not hide the others
            failures[name] = f"{type(e).__name__}: {e}"
            continue
        rows.append([name, *(values[m] for m in TABLE_METRICS)])
    return rows, curves, failures


def markdown_table(header, rows) -> str:
    """A Markdown table; float cells with four decimals."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [c if isinstance(c, str) else f"{c:.4f}" for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def faithfulness_record(rows, failures, seconds) -> tuple[dict, list[str]]:
    """The ``faithfulness_table`` results as a JSON-ready dict and as Markdown lines (which way
    each metric is better, the table, the methods that failed)."""
    better = [METRICS[m][1] for m in TABLE_METRICS]
    record = {"header": ["method", *TABLE_METRICS], "better": better, "rows": rows,
              "seconds": round(seconds, 1), "failures": failures}
    md = ["Better: " + ", ".join(f"{m} {b}" for m, b in zip(TABLE_METRICS, better)) + ".", "",
          markdown_table(["method", *TABLE_METRICS], rows), ""]
    if failures:
        md += ["Failed: " + "; ".join(f"{k}: {v}" for k, v in failures.items()), ""]
    return record, md


def _figure(curves: dict[str, np.ndarray], name: str, unit: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, values in curves.items():
        frac = np.linspace(0, 1, len(values))
        ax.plot(frac, values, label=method, ls="--" if "random" in method else "-")
    ax.set_xlabel(f"fraction of {unit} removed (most relevant first, set to 0)")
    ax.set_ylabel("mean probability of the predicted class")
    ax.set_title(f"Deletion curves on {name}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def demo_section(ctx):
    """The faithfulness table (deletion AUC MoRF/LeRF, insertion, LeRF change, sparseness,
    continuity) and the deletion curves of every available attribution method.

    Insertion starts from a blurred image for images and from the training examples' mean for
    other inputs. The section fails, naming each method's error, when no attribution method
    (the random control aside) could be evaluated.
    """
    from jaxplain.report import Section

    n, steps, samples = (16, 10, 2) if ctx.quick else (128, 32, 8)
    x = jnp.asarray(ctx.data.x_test[:n])
    target = jnp.argmax(ctx.f(x), axis=-1)
    key_methods, key_noise = jax.random.split(ctx.key)
    methods = fit_occlusion(attribution_methods(key_methods, quick=ctx.quick), x.shape[1:])
    start = insertion_baseline(x, ctx.data.x_train)
    images = isinstance(start, str)
    rows, curves, failures = faithfulness_table(ctx.f, x, target, methods, key=key_noise,
                                                steps=steps, samples=samples,
                                                progress=ctx.progress, baseline_insertion=start)
    scored = [r for r in rows if not r[0].startswith("random")]
    if not scored:
        raise RuntimeError(
            f"no attribution method could be evaluated on these {ctx.noun} (inputs shaped "
            f"{tuple(x.shape[1:])}): " + "; ".join(f"{k}: {v}" for k, v in failures.items()))
    header = ["method", *TABLE_METRICS]
    better = ", ".join(f"{m} {METRICS[m][1]}" for m in TABLE_METRICS)
    # A constant map (sparseness, a Gini index, 0: e.g. LRP's Flat rule on a dense first layer)
    # ranks no feature above another; its continuity is trivially perfect, so it is no "best".
    gini = 1 + TABLE_METRICS.index("sparseness")
    constant = [r[0] for r in scored if abs(r[gini]) < CONSTANT_GINI]
    ranked = [r for r in scored if r[0] not in constant] or scored
    best = {}
    for j, m in enumerate(TABLE_METRICS, start=1):
        pick = min if METRICS[m][1] == "lower" else max
        best[m] = pick(ranked, key=lambda r: r[j])[0]
    control = " and a random control" if len(rows) > len(scored) else ""
    lines = [
        f"Faithfulness of {len(scored)} attribution methods{control} on {n} test {ctx.noun} "
        f"(predicted class, {steps} deletion steps, {samples} noise samples for continuity).",
        "Better: " + better + ".",
    ]
    lines += [f"best {m}: {name}" for m, name in best.items()]
    if constant and len(ranked) < len(scored):
        lines.append(f"left out of best: {', '.join(constant)} (a constant map, sparseness 0: it "
                     f"ranks no {'pixel' if images else 'feature'} above another)")
    if failures:
        lines.append("failed: " + "; ".join(f"{k} ({v})" for k, v in failures.items()))
    unit = "pixels" if images else "features"
    start_text = ("a blurred image" if images else
                  "the mean training example (a blur needs images)")
    sec = Section("Explanation metrics", text="\n".join(lines))
    sec = sec.with_table(
        header=header,
        rows=[[r[0], *(round(float(v), 4) for v in r[1:])] for r in rows],
        caption=f"Mean over the {ctx.noun}. deletion_*: area under the probability curve as "
                f"{unit} are set to 0 (MoRF: most relevant first, lower is better; LeRF: least "
                f"relevant first, higher is better); insertion: area as {unit} are restored onto "
                f"{start_text} (higher is better); lerf_change: critical-pathways relative "
                f"probability change after removing the 1..10% least relevant {unit} (lower is "
                "better); sparseness: Gini index; continuity: max ||R(x')-R(x)||_1/||x'-x||_2.",
    )
    if curves:
        sec = sec.with_figure(_figure(curves, ctx.name, unit),
                              caption="Mean deletion (MoRF) curves.")
    return sec
