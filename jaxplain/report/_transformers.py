"""The transformers section of the report: attention rollout, gradient-weighted rollout,
conservative propagation and AttnLRP, on the model when it has attention layers, else (``jaxplain demo``)
on the embedded digits ViT."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.report._context import no_progress


def _model(ctx):
    """``(f, label)`` to explain, or ``(None, None)`` when neither the model nor a default
    transformer applies."""
    from jaxplain import as_function, data
    from jaxplain.attribution import attention_sites

    try:
        attention_sites(ctx.f, jnp.asarray(ctx.data.x_test[:2]))
        return ctx.f, "the model"
    except ValueError:
        if not isinstance(ctx.model, data.DigitsCNN):
            return None, None
    model, variables = data.pretrained(ctx.cache_dir, architecture="vit",
                                       progress=ctx.progress is not no_progress)
    f = as_function(model, variables)
    acc = data.accuracy(f, ctx.data.x_test, ctx.data.y_test)
    return f, f"the embedded digits ViT (2 scanned encoder blocks, 4 heads, {acc:.1%} test accuracy)"


def _token_map(tokens, example_shape):
    """Token relevance ``(t,)`` as a map over the input: the patch grid of a square number of
    tokens tiling an image, else the tokens themselves."""
    t = tokens.shape[0]
    side = int(round(np.sqrt(t)))
    if len(example_shape) == 3 and side * side == t and example_shape[0] % side == 0:
        scale = example_shape[0] // side, example_shape[1] // side
        return np.kron(tokens.reshape(side, side), np.ones(scale))[..., None]
    return tokens


def demo_section(ctx):
    """Token maps from the attention weights and pixel maps by conservative propagation and
    AttnLRP for a few test examples, with the time per example and how well each pixel method
    sums to the logit."""
    from jaxplain import attribution as A
    from jaxplain.report import Section
    from jaxplain.report._display import map_grid

    f, label = _model(ctx)
    if f is None:
        return Section("Transformers", text="The model has no attention layers (no softmax site "
                       "of shape (batch, [heads,] tokens, tokens)), so the transformer methods "
                       "(attention rollout, gradient-weighted rollout, conservative propagation, "
                       "AttnLRP) "
                       "do not apply to it.")
    n = 4 if ctx.quick else 8
    x = jnp.asarray(ctx.data.x_test[:n])
    target = jnp.argmax(f(x), axis=-1)
    methods = {
        "attention rollout": (lambda: A.attention_rollout(f, x), False),
        "gradient-weighted rollout": (lambda: A.gradient_weighted_rollout(f, x, target), False),
        "conservative propagation": (lambda: A.conservative_propagation(f, x, target), True),
        "attnlrp": (lambda: A.attn_lrp(f, x, target), True),
        "gradient x input": (lambda: A.gradient_x_input(f, x, target), True),
    }
    results, rows = {}, []
    for name, (method, pixels) in ctx.progress(list(methods.items()), desc="transformers: methods"):
        jax.block_until_ready(method())  # compiles
        start = time.perf_counter()
        results[name] = np.asarray(jax.block_until_ready(method()))
        rows.append([name, f"{1000 * (time.perf_counter() - start) / n:.2f}"])
    logit = np.asarray(f(x))[np.arange(n), np.asarray(target)]
    for row in rows:
        if methods[row[0]][1]:
            total = results[row[0]].reshape(n, -1).sum(axis=1)
            row.append(f"{np.abs(total - logit).max():.2e}")
        else:
            row.append("(token to token)")
    sites = A.attention_sites(f, x)
    maps = {}
    for name in ("attention rollout", "gradient-weighted rollout"):
        # each input token's share of the mean output token (the one the head reads); the
        # gradient-weighted rollout without the identity it starts from
        r = results[name]
        if name.startswith("gradient"):
            r = r - np.eye(r.shape[-1])
        maps[name] = (np.stack([_token_map(t, x.shape[1:]) for t in r.mean(axis=1)]), False)
    for name in ("conservative propagation", "attnlrp", "gradient x input"):
        maps[name] = (results[name], True)
    text = "\n".join([
        f"Explanations of {label} for {n} test {ctx.noun}, from its {len(sites)} attention "
        f"weight sites ({', '.join(sites)}).",
        "Rollouts are token to token; shown is each input token's share of the mean output token "
        "(the one the head reads). Conservative propagation holds the attention weights and "
        "LayerNorm scales constant in the backward pass (Ali et al. 2022): on a bias-free "
        "network its pixel attributions sum to the logit, which gradient x input's do not. "
        "AttnLRP (Achtibat et al. 2024) also holds the LayerNorm scales, but passes relevance "
        "through the softmaxes (a Taylor expansion at the scores, which absorbs some) and splits "
        "it evenly between the two factors of q k^T and p v.",
    ])
    return (Section("Transformers", text=text)
            .with_table(header=["method", "ms per example (CPU, compiled)",
                                "max |sum of attribution - logit|"],
                        rows=rows, caption="Second call (compiled) timings on the demo machine.")
            .with_figure(map_grid(np.asarray(x), maps, np.asarray(target), size=1.45),
                         caption="Token maps (magnitude) and pixel maps (red positive, blue "
                                 "negative) of the predicted class."))
