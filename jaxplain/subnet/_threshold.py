"""From learnt scores to a discrete sub-network: thresholding and the dependency closure."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxplain.core._layout import fast_convolutions
from jaxplain.subnet._objective import (agreement, gated, gated_capture, kl_divergence,
                                        log_probs, reported_kl)


def effective(params: dict) -> dict[str, jax.Array]:
    """``{site: sigmoid(theta) * score}`` (any leading candidate axes broadcast)."""
    return {n: jax.nn.sigmoid(params["theta"][n])[..., None] * s
            for n, s in params["scores"].items()}


def by_threshold(params: dict, tau: float, gate_threshold: float) -> dict[str, jax.Array]:
    """Keep a unit when its score exceeds ``tau`` and its layer's gate is >= ``gate_threshold``."""
    return {n: (s > tau) & (jax.nn.sigmoid(params["theta"][n])[..., None] >= gate_threshold)
            for n, s in params["scores"].items()}


def target_units(sparsity: float, total: int) -> int:
    """Units a target ``sparsity`` keeps of ``total``: ``max(1, floor((1 - sparsity) * total))``."""
    return max(1, math.floor((1.0 - sparsity) * total + 1e-9))


def benefit(f: Callable, params: dict, x: jax.Array, logp: jax.Array) -> dict[str, jax.Array]:
    """``{site: Float[k, c]}``: ``-dKL/dm``, how fast the region KL falls as each unit's
    multiplier ``m = gate * score`` grows, for each of ``k`` candidates (the ranking's order of
    the units whose score is 0: the first-order gain of taking them back)."""

    def one(m):
        return jax.grad(lambda m: -kl_divergence(logp, gated(f, m)(x)))(m)

    return jax.vmap(one)(effective(params))


def _ranking(params: dict, gate_threshold: float, gain: dict, floor: float
             ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(multiplier, rank, eligible)`` over all units of all sites (last axis, in site order).

    Every unit of a layer whose gate is open is eligible, zero scores included: rank 0 is the
    largest ``gate * score``; the units whose score is 0 follow the positive ones, the largest
    ``gain`` (:func:`benefit`) first, then by position; closed layers come last. A unit whose
    score is 0 gets the multiplier ``gate * floor`` (the smallest score a kept unit takes)."""
    eff = effective(params)
    revived = effective(dict(params, scores={n: jnp.full_like(s, floor)
                                             for n, s in params["scores"].items()}))
    open_ = by_threshold(params, -1.0, gate_threshold)
    cat = lambda tree: jnp.concatenate([tree[n] for n in eff], axis=-1)  # noqa: E731
    flat, eligible = cat(eff), cat(open_)
    order = jnp.lexsort((-cat(gain), -flat, ~eligible), axis=-1)  # the last key sorts first
    ranks = jnp.argsort(order, axis=-1)
    return jnp.where(flat > 0, flat, cat(revived)), ranks, eligible


def _split(flat: jax.Array, params: dict) -> dict[str, jax.Array]:
    """The inverse of concatenating the sites' unit axes."""
    out, start = {}, 0
    for n, s in params["scores"].items():
        size = s.shape[-1]
        out[n] = flat[..., start:start + size]
        start += size
    return out


def by_rank(params: dict, sparsity: float, gate_threshold: float, gain: dict,
            floor: float) -> dict[str, jax.Array]:
    """Keep the first :func:`target_units` units of the ranking (per candidate, over all sites:
    the largest ``gate * score``, then the units whose score is 0 by ``gain``), skipping layers
    whose gate is closed."""
    _, ranks, eligible = _ranking(params, gate_threshold, gain, floor)
    keep = target_units(sparsity, ranks.shape[-1])
    return _split((ranks < keep) & eligible, params)


def by_rank_closed(f: Callable, params: dict, x: jax.Array, key: jax.Array, sparsity: float,
                   gate_threshold: float, gain: dict, floor: float) -> dict[str, jax.Array]:
    """:func:`by_rank` followed by the dependency :func:`closure`, growing the ranked prefix
    until the closed sub-network keeps at least :func:`target_units` units (traceable).

    The top-ranked units need not form a path from the input to the output: at a high target
    sparsity they can all sit in layers that every path crosses elsewhere (say three units of a
    residual branch and none of the stem), and the closure then removes every one of them.
    So the ranked prefix ``b`` grows by the shortfall, ``b <- b + (target - kept)``, until the
    closure keeps ``target`` units (or every eligible unit is in), and a bisection then finds
    the shortest prefix that still does. The ranking holds every unit of the open layers, zero
    scores included (a search with a large L1 weight leaves most scores at exactly 0), so the
    result has fewer than ``target`` units only when the closure of all of them has, and is
    empty only when no eligible unit connects the input to the output.

    That prefix can exceed the target by the units that connect the chain. When it exceeds it
    by more than one unit per scored site, the first unit of a layer that every path crosses
    came far down the ranking (scores of different layers differ in scale, or barely moved
    from the start), and every unit ranked above it came with it: its units are then removed
    one by one from the lowest-ranked up, each removal kept when the closure of the rest still
    has ``target`` units (backward elimination: a unit goes unless the chain needs it).

    Args:
      f: The model.
      params: ``{"scores": {site: (k, c)}, "theta": {site: (k,)}}`` of ``k`` candidates.
      x: The region.
      key: PRNG key of the closure's probes.
      sparsity: The target share of removed units.
      gate_threshold: A layer whose gate is below it is never kept.
      gain: ``{site: (k, c)}``, the order of the units whose score is 0 (:func:`benefit`).
      floor: Their score in the closure's probes (any positive value).

    Returns:
      The kept masks ``{site: Bool[k, c]}``.
    """
    mult, ranks, eligible = _ranking(params, gate_threshold, gain, floor)
    target = target_units(sparsity, ranks.shape[-1])
    slack = len(params["scores"])  # one connecting unit per site
    close = _closer(f, x, key)

    def one(mult, ranks, eligible):
        def closed(chosen):  # (count, masks) of the closure of the chosen units (flat mask)
            masks = close(_split(jnp.where(chosen, mult, 0.0), params))
            return count(masks), masks

        def kept(b):
            return closed((ranks < b) & eligible)

        available = jnp.sum(eligible)

        def grow(carry):  # (lo, hi, kept at hi, masks at hi); kept at lo < target
            _, hi, n, _ = carry
            b = jnp.minimum(hi + jnp.maximum(target - n, 1), available)
            return (hi, b, *kept(b))

        def bisect(carry):
            lo, hi, n, masks = carry
            mid = (lo + hi) // 2
            n_mid, masks_mid = kept(mid)
            enough = n_mid >= target
            return (jnp.where(enough, lo, mid), jnp.where(enough, mid, hi),
                    *jax.tree.map(lambda a, b: jnp.where(enough, a, b), (n_mid, masks_mid),
                                  (n, masks)))

        b = jnp.asarray(target, jnp.int32)
        carry = jax.lax.while_loop(lambda c: (c[2] < target) & (c[1] < available), grow,
                                   (b, b, *kept(b)))
        carry = jax.lax.while_loop(lambda c: (c[1] - c[0] > 1) & (c[2] >= target), bisect,
                                   carry)
        n, masks = carry[2:]
        flat = jnp.concatenate([masks[name] for name in params["scores"]], axis=-1)
        # The kept units from the lowest-ranked up (the others last, never reached).
        order = jnp.argsort(jnp.where(flat, -ranks, ranks.shape[-1]))
        tries = jnp.where(n > target + slack, jnp.sum(flat, dtype=jnp.int32), 0)

        def eliminate(carry):  # (i, n, masks): try without the i-th lowest-ranked kept unit
            i, n, masks = carry
            chosen = jnp.concatenate([masks[name] for name in params["scores"]], axis=-1)
            n_new, masks_new = closed(chosen.at[order[i]].set(False))
            enough = n_new >= target
            return (i + 1, *jax.tree.map(lambda a, b: jnp.where(enough, a, b), (n_new, masks_new),
                                         (n, masks)))

        return jax.lax.while_loop(lambda c: (c[0] < tries) & (c[1] > target), eliminate,
                                  (jnp.asarray(0, jnp.int32), n, masks))[2]

    return jax.vmap(one)(mult, ranks, eligible)


def _closure_round(f, mult, x, tangent, cotangents, drop_constants):
    """Which kept units of one candidate still influence the output and, where
    ``drop_constants`` (a bool), still depend on the input (random tangent / cotangent probes;
    a zero derivative here is exactly zero)."""
    _, (_, dvalues) = jax.jvp(gated_capture(f, mult), (x,), (tangent,))
    _, pullback = jax.vjp(lambda m: gated(f, m)(x), mult)
    sens = jax.vmap(lambda c: pullback(c)[0])(cotangents)
    keep = {}
    for n, m in mult.items():
        axes = tuple(range(dvalues[n].ndim - 1))
        depends = jnp.any(dvalues[n] != 0, axis=axes) | ~drop_constants
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


def _closer(f: Callable, x: jax.Array, key: jax.Array) -> Callable[[dict], dict]:
    """The closure of one candidate: ``{site: Float[c]}`` multipliers to kept masks.

    Two closures run side by side: the full one, which also removes the units whose value is
    constant on the region, and the reach-only one, which keeps them. Such a constant may be
    one the chain needs (a bias unit whose 1 sets a threshold downstream), so the constant
    units go, as a group, only when the full closure keeps as many of the region's labels."""
    out = jax.eval_shape(f, x)
    tangent = _probe(key, 0, x.shape, x.dtype)
    cotangents = _probe(key, 1, (2,) + out.shape, out.dtype)
    logp = log_probs(f(x))

    def close(mult, drop_constants):
        def body(carry):
            masks, _, i = carry
            new = _closure_round(f, {n: jnp.where(masks[n], mult[n], 0.0) for n in mult}, x,
                                 tangent, cotangents, drop_constants)
            changed = jnp.any(jnp.stack([jnp.any(new[n] != masks[n]) for n in mult]))
            return new, changed, i + 1

        masks = {n: m != 0 for n, m in mult.items()}
        limit = len(mult) + 1
        init = (masks, jnp.asarray(True), jnp.asarray(0))
        return jax.lax.while_loop(lambda c: c[1] & (c[2] < limit), fast_convolutions(body),
                                  init)[0]

    def one(mult):
        both = jax.vmap(close, in_axes=(None, 0))(mult, jnp.asarray([True, False]))
        agree = jax.vmap(lambda m: agreement(logp, gated(f, m)(x)))(
            {n: jnp.where(both[n], mult[n], 0.0) for n in mult})
        full = agree[0] >= agree[1]
        return {n: jnp.where(full, m[0], m[1]) for n, m in both.items()}

    return one


def closure(f: Callable, mult: dict, x: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    """Removes, until nothing changes, kept units (multiplier != 0) that no longer reach the
    output, and those that no longer depend on the input when removing them all keeps as many
    of the region's arg-max labels (traceable; runs inside jit).

    Args:
      f: The model.
      mult: ``{site: Float[candidates, c]}`` multipliers of a batch of candidates.
      x: The region.
      key: PRNG key of the random probes.

    Returns:
      The kept masks ``{site: Bool[candidates, c]}``.
    """
    return jax.vmap(_closer(f, x, key))(mult)


def evaluate(f, mult, x, logp):
    """``(agreement, kl)`` on ``x`` for a batch of candidate multipliers ``{site: (k, c)}``."""

    def one(m):
        logits = gated(f, m)(x)
        return agreement(logp, logits), reported_kl(logp, logits)

    return jax.vmap(one)(mult)


def count(masks: dict) -> jax.Array:
    """Kept units per candidate."""
    return sum(jnp.sum(m, axis=-1) for m in masks.values())
