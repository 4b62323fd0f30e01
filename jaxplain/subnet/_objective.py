"""The gated function and the NeuroChains objective.

Each scored site ``u`` gets one non-negative score per unit (the value's last axis) and one gate
``sigmoid(theta_u)``; the value ``v`` at the site becomes ``v * sigmoid(theta_u) * s_u``
(applied with :func:`jaxplain.intervene`, so the weights of ``f`` are never touched). The
objective is

    L(s, theta) = mean_n KL(softmax f(x_n) || softmax f_{s,theta}(x_n))
                  + l1 * sum_{u,c} |s_{u,c}| + gate_l1 * G(s, theta)

with ``G = sum_u sigmoid(theta_u)`` (``gate_penalty="sigmoid"``) or
``G = sum_u sigmoid(theta_u) * ||s_u||_1`` (``"gated_l1"``); the gate term is our addition.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

import jaxplain as jp
from jaxplain.core._capture import OwnEdit
from jaxplain.core._cpu import cpu_friendly

Params = dict[str, dict[str, Array]]  # {"scores": {site: (c,)}, "theta": {site: ()}}


def _scaled(value: Array, m: Array) -> Array:
    """``value * m``, ``m`` the multipliers broadcast to the value (see ``OwnEdit``)."""
    return value * m.astype(value.dtype)


def _gated(f: Callable, multipliers: Mapping[str, Float[Array, " c"]]) -> Callable:
    return jp.intervene(f, {n: OwnEdit(_scaled, m) for n, m in multipliers.items()})


def gated(f: Callable, multipliers: Mapping[str, Float[Array, " c"]]) -> Callable:
    """``f`` with the value at each site multiplied unit-wise (last axis) by its multiplier
    (in XLA:CPU's fast forms, :mod:`jaxplain.core._cpu`: it is differentiated in loops)."""
    return cpu_friendly(_gated(f, multipliers))


def gated_capture(f: Callable, multipliers: Mapping[str, Float[Array, " c"]]) -> Callable:
    """Like :func:`gated`, returning ``(y, {site: value})`` too (the values of the gated
    function at the scored sites, through :func:`jaxplain.capture`)."""
    return cpu_friendly(jp.capture(_gated(f, multipliers), list(multipliers)))


def multipliers(params: Params, masks: Mapping[str, Bool[Array, " c"]],
                train_gates: bool) -> dict[str, Array]:
    """``{site: mask * sigmoid(theta) * score}``; the gates are constants unless trained."""
    out = {}
    for n, s in params["scores"].items():
        theta = params["theta"][n]
        g = jax.nn.sigmoid(theta if train_gates else jax.lax.stop_gradient(theta))
        out[n] = jnp.where(masks[n], g * s, 0.0)
    return out


def log_probs(logits: Float[Array, "n k"]) -> Float[Array, "n k"]:
    """``log_softmax(logits)`` over the last axis, in float32 at least (bfloat16 and float16
    logits are upcast first: their rounding, 2**-8 for bfloat16, is coarser than the small
    KL values the search compares)."""
    return jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)),
                              axis=-1)


def kl_divergence(logp: Float[Array, "n k"], logits: Float[Array, "n k"]) -> Float[Array, ""]:
    """Mean over the batch of KL(p || softmax(logits)), ``p = exp(logp)``, in nats, in float32
    at least (:func:`log_probs`).

    Only the classes with ``p > 0`` count (``0 * log 0 = 0``): a head that masks classes with
    ``-inf`` gives ``logp = logq = -inf`` there, whose difference is NaN. The masked classes
    are kept out of the value and the gradient alike (the double ``where``: the difference is
    taken of finite stand-ins, so no NaN reaches the backward pass)."""
    logq = log_probs(logits)
    dtype = jnp.promote_types(logp.dtype, logq.dtype)
    logp, logq = logp.astype(dtype), logq.astype(dtype)
    support = ~jnp.isneginf(logp)  # NaN stays in, and makes the KL NaN
    diff = jnp.where(support, logp, 0.0) - jnp.where(support, logq, 0.0)
    return jnp.mean(jnp.sum(jnp.where(support, jnp.exp(logp) * diff, 0.0), axis=-1))


def reported_kl(logp: Float[Array, "n k"], logits: Float[Array, "n k"]) -> Float[Array, ""]:
    """:func:`kl_divergence` clamped at 0, for reporting: the float32 sum of ``p * (log p -
    log q)`` can cancel to a small negative value (-1e-8) where ``q == p``; the objective keeps
    the unclamped value, whose gradient the search follows."""
    return jnp.maximum(kl_divergence(logp, logits), 0.0)


def agreement(logp: Float[Array, "n k"], logits: Float[Array, "n k"]) -> Float[Array, ""]:
    """Share of the batch whose arg-max label ``logits`` keep."""
    return jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(logp, -1))


def objective(params: Params, f: Callable, x: Array, logp: Array,
              masks: Mapping[str, Bool[Array, " c"]], l1: Float[Array, ""],
              gate_l1: Float[Array, ""], *, gate_penalty: str, train_gates: bool
              ) -> tuple[Float[Array, ""], tuple[Array, Array]]:
    """The loss and ``(kl, agreement)`` on the region ``x`` with original log-softmax ``logp``."""
    mult = multipliers(params, masks, train_gates)
    logits = gated(f, mult)(x)
    kl = kl_divergence(logp, logits)
    l1_terms = {n: jnp.sum(jnp.abs(s)) for n, s in params["scores"].items()}
    gates = {n: jax.nn.sigmoid(t) for n, t in params["theta"].items()}
    if gate_penalty == "sigmoid":
        gate_term = sum(gates.values())
    else:
        gate_term = sum(gates[n] * l1_terms[n] for n in gates)
    loss = kl + l1 * sum(l1_terms.values()) + gate_l1 * gate_term
    return loss, (kl, agreement(logp, logits))
