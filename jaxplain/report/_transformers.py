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


def _rows_read(f, x, target, site) -> np.ndarray:
    """How much the target logits depend on each output token of the attention `site`: the sum
    over examples, heads and columns of ``|d f_t / d A|`` at its weights ``A`` (row ``i`` of
    ``A`` only makes output token ``i``), shape ``(tokens,)``."""
    from jaxplain import capture, intervene

    weights = capture(f, [site])(x)[1][site]

    def read(d):
        y = intervene(f, {site: lambda a: a + d})(x)
        return y[jnp.arange(x.shape[0]), target].sum()

    g = jnp.abs(jax.grad(read)(jnp.zeros_like(weights)))
    g = g.reshape(g.shape[0], -1, g.shape[-2], g.shape[-1])
    return np.asarray(g.sum(axis=(0, 1, 3)), np.float64)


def _read_row(f, x, target, site) -> tuple[int | None, str]:
    """The output token the head reads, or None for the mean over all of them, and why."""
    try:
        rows = _rows_read(f, x, target, site)
    except Exception as e:  # noqa: BLE001 - the section falls back to the mean, and says so
        return None, (f"shown is each input token's share of the mean output token (whether "
                      f"the head reads a single token could not be tested: {type(e).__name__})")
    read = np.flatnonzero(rows > 1e-6 * max(rows.max(), 1e-30))
    if read.size == 1:
        k = int(read[0])
        return k, (f"shown is row {k}, each input token's share of output token {k}: the "
                   f"logits read only that token of the last attention layer ({site}; every "
                   f"other row of its weights has zero gradient), as a ViT's head reads its "
                   f"[CLS] token")
    return None, (f"shown is each input token's share of the mean output token: the logits "
                  f"read {read.size} of the {rows.size} output tokens of the last attention layer "
                  f"({site}; rows of its weights with nonzero gradient), e.g. through a mean "
                  f"pool")


def _grid(tokens: int, example_shape) -> tuple[int, int] | None:
    """``(side, extra)``: the patch grid's side when `tokens` (less `extra` of 0 or 1 [CLS]
    tokens) is a square number tiling an image of `example_shape`, else None."""
    if len(example_shape) != 3:
        return None
    for extra in (0, 1):
        side = int(round(np.sqrt(tokens - extra)))
        if side > 0 and side * side == tokens - extra and example_shape[0] % side == 0 \
                and example_shape[1] % side == 0:
            return side, extra
    return None


def _token_map(tokens, example_shape, cls: int = 0):
    """Token relevance ``(t,)`` as a map over the input: the patch grid of a square number of
    tokens tiling an image (without the [CLS] token `cls` when there is one more), else the
    tokens themselves."""
    grid = _grid(tokens.shape[0], example_shape)
    if grid is None:
        return tokens
    side, extra = grid
    patches = np.delete(tokens, cls) if extra else tokens
    scale = example_shape[0] // side, example_shape[1] // side
    return np.kron(patches.reshape(side, side), np.ones(scale))[..., None]


def _layout(grid, cls: int, read_row: int | None, shares: list) -> str:
    """How the token maps are drawn, for the section's text."""
    if grid is None:
        return " Each token is one bar."
    side, extra = grid
    if not extra:
        return f" The {side * side} tokens are drawn on the {side}x{side} patch grid."
    which = ("the [CLS] token the head reads" if read_row is not None
             else "taken for a [CLS] token as it is the one beyond the square grid")
    return (f" The {side * side} patch tokens are drawn on the {side}x{side} patch grid, without "
            f"token {cls} ({which}), whose own share of the map's magnitude averages "
            f"{' and '.join(shares)}.")


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
    read_row, read = _read_row(f, x, target, sites[-1])
    grid = _grid(results["attention rollout"].shape[-1], x.shape[1:])
    cls = 0 if read_row is None else read_row
    maps, shares = {}, []
    for name in ("attention rollout", "gradient-weighted rollout"):
        # each input token's share of the output token the head reads (or of their mean); the
        # gradient-weighted rollout without the identity it starts from
        r = results[name]
        if name.startswith("gradient"):
            r = r - np.eye(r.shape[-1])
        r = r.mean(axis=1) if read_row is None else r[:, read_row]
        maps[name] = (np.stack([_token_map(t, x.shape[1:], cls) for t in r]), False)
        if grid is not None and grid[1]:
            share = np.abs(r[:, cls]) / np.maximum(np.abs(r).sum(axis=1), 1e-12)
            shares.append(f"{share.mean():.0%} ({name})")
    for name in ("conservative propagation", "attnlrp", "gradient x input"):
        maps[name] = (results[name], True)
    text = "\n".join([
        f"Explanations of {label} for {n} test {ctx.noun}, from its {len(sites)} attention "
        f"weight sites ({', '.join(sites)}).",
        f"Rollouts are token to token; {read}.{_layout(grid, cls, read_row, shares)}",
        "Conservative propagation holds the attention weights and "
        "LayerNorm scales constant in the backward pass (Ali et al. 2022): on a network "
        "without biases and with ReLU (or no) MLP activations its pixel attributions sum to the "
        "logit, which gradient x input's do not (a GELU breaks the sum). "
        "AttnLRP (Achtibat et al. 2024) also holds the LayerNorm scales, but passes relevance "
        "through the softmaxes (a Taylor expansion at the scores, which absorbs some) and splits "
        "it evenly between the two factors of q k^T and p v.",
    ])
    return (Section("Transformers", text=text)
            .with_table(header=["method", f"ms per example ({jax.default_backend().upper()}, "
                                "compiled)", "max |sum of attribution - logit|"],
                        rows=rows, caption="Second call (compiled) timings on the machine that "
                                           "ran the report.")
            .with_figure(map_grid(np.asarray(x), maps, np.asarray(target), size=1.45),
                         caption="Token maps (magnitude, black through red to white) and "
                                 "pixel maps (centred at zero: red positive, blue negative) of "
                                 "the predicted class; each panel scaled to its own largest "
                                 "absolute value."))
