"""From learnt scores to a discrete sub-network: thresholding and the dependency closure."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxplain.core._layout import fast_convolutions
from jaxplain.subnet._objective import agreement, gated, gated_capture, kl_divergence


def effective(params: dict) -> dict[str, jax.Array]:
    """``{site: sigmoid(theta) * score}`` (any leading candidate axes broadcast)."""
    return {n: jax.nn.sigmoid(params["theta"][n])[..., None] * s
            for n, s in params["scores"].items()}


def by_threshold(params: dict, tau: float, gate_threshold: float) -> dict[str, jax.Array]:
    """Keep a unit when its score exceeds ``tau`` and its layer's gate is >= ``gate_threshold``."""
    return {n: (s > tau) & (jax.nn.sigmoid(params["theta"][n])[..., None] >= gate_threshold)
            for n, s in params["scores"].items()}


def by_rank(params: dict, sparsity: float, gate_threshold: float) -> dict[str, jax.Array]:
    """Keep the ``max(1, floor((1 - sparsity) * total))`` units with the largest
    ``gate * score`` (per candidate, over all sites), skipping layers whose gate is closed."""
    names = list(params["scores"])
    eff = effective(params)
    open_ = by_threshold(params, -1.0, gate_threshold)
    flat = jnp.concatenate([jnp.where(open_[n], eff[n], -1.0) for n in names], axis=-1)
    total = flat.shape[-1]
    keep = max(1, math.floor((1.0 - sparsity) * total + 1e-9))
    ranks = jnp.argsort(jnp.argsort(-flat, axis=-1), axis=-1)  # ties broken by position
    kept = (ranks < keep) & (flat > 0)
    out, start = {}, 0
    for n in names:
        size = params["scores"][n].shape[-1]
        out[n] = kept[..., start:start + size]
        start += size
    return out


def _closure_round(f, mult, x, tangent, cotangents):
    """Which kept units of one candidate still depend on the input and still influence the
    output (random tangent / cotangent probes; a zero derivative here is exactly zero)."""
    _, (_, dvalues) = jax.jvp(gated_capture(f, mult), (x,), (tangent,))
    _, pullback = jax.vjp(lambda m: gated(f, m)(x), mult)
    sens = jax.vmap(lambda c: pullback(c)[0])(cotangents)
    keep = {}
    for n, m in mult.items():
        axes = tuple(range(dvalues[n].ndim - 1))
        depends = jnp.any(dvalues[n] != 0, axis=axes)
        influences = jnp.any(sens[n] != 0, axis=0)
        keep[n] = (m != 0) & depends & influences
    return keep


def _probe(key: jax.Array, stream: int, shape: tuple, dtype) -> jax.Array:
    """Pseudo-random probe values in [-0.5, 0.5) from an integer hash of ``key`` (cheap to
    compile on CPU, unlike threefry; the probes only need to be generic, not independent)."""
    seed = jnp.sum(jax.random.key_data(key).astype(jnp.uint32)) + jnp.uint32(stream * 7919)
    h = jnp.arange(math.prod(shape), dtype=jnp.uint32) * jnp.uint32(2654435761) + seed
    for shift, mult in ((16, 0x45D9F3B), (16, 0x45D9F3B), (16, 1)):
        h = (h ^ (h >> shift)) * jnp.uint32(mult)
    return (h.astype(jnp.float32) / 2.0**32 - 0.5).reshape(shape).astype(dtype)


def closure(f: Callable, mult: dict, x: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    """Removes, until nothing changes, kept units (multiplier != 0) that no longer depend on
    the input or no longer reach the output (traceable; runs inside jit).

    Args:
      f: The model.
      mult: ``{site: Float[candidates, c]}`` multipliers of a batch of candidates.
      x: The region.
      key: PRNG key of the random probes.

    Returns:
      The kept masks ``{site: Bool[candidates, c]}``.
    """

    out = jax.eval_shape(f, x)
    tangent = _probe(key, 0, x.shape, x.dtype)
    cotangents = _probe(key, 1, (2,) + out.shape, out.dtype)

    def one(mult):
        def body(carry):
            masks, _, i = carry
            new = _closure_round(f, {n: jnp.where(masks[n], mult[n], 0.0) for n in mult}, x,
                                 tangent, cotangents)
            changed = jnp.any(jnp.stack([jnp.any(new[n] != masks[n]) for n in mult]))
            return new, changed, i + 1

        masks = {n: m != 0 for n, m in mult.items()}
        limit = len(mult) + 1
        init = (masks, jnp.asarray(True), jnp.asarray(0))
        return jax.lax.while_loop(lambda c: c[1] & (c[2] < limit), fast_convolutions(body),
                                  init)[0]

    return jax.vmap(one)(mult)


def evaluate(f, mult, x, logp):
    """``(agreement, kl)`` on ``x`` for a batch of candidate multipliers ``{site: (k, c)}``."""

    def one(m):
        logits = gated(f, m)(x)
        return agreement(logp, logits), kl_divergence(logp, logits)

    return jax.vmap(one)(mult)


def count(masks: dict) -> jax.Array:
    """Kept units per candidate."""
    return sum(jnp.sum(m, axis=-1) for m in masks.values())
