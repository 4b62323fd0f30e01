"""A small L2-regularized logistic regression (the linear classifier behind a CAV)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["weight", "bias", "accuracy"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class LinearClassifier:
    """``p(positive | a) = sigmoid(a @ weight + bias)`` on standardized-free raw features.

    Attributes:
        weight: ``(d,)``; bias: scalar; accuracy: training accuracy.
    """

    weight: Array
    bias: Array
    accuracy: Array


@functools.partial(jax.jit, static_argnames=("steps",))
def _fit(a, y, l2, *, steps):
    # Scale features so one learning rate suits any site; fold the scale back at the end.
    scale = jnp.maximum(jnp.std(a), 1e-12)
    z = a / scale
    params = (jnp.zeros(a.shape[1], a.dtype), jnp.zeros((), a.dtype))
    opt = optax.adam(0.05)

    def loss(p):
        logits = z @ p[0] + p[1]
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y)) + l2 * jnp.sum(p[0] ** 2)

    def step(carry, _):
        p, s = carry
        g = jax.grad(loss)(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (p, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    acc = jnp.mean(((z @ p[0] + p[1]) > 0) == (y > 0.5))
    return LinearClassifier(p[0] / scale, p[1], acc)


def fit_linear(positive: Float[Array, "n d"], negative: Float[Array, "m d"], *,
               l2: float = 1e-3, steps: int = 300) -> LinearClassifier:
    """Fit logistic regression separating ``positive`` (label 1) from ``negative`` (label 0).

    Full-batch Adam on the mean cross-entropy plus ``l2 * ||w||^2`` (features divided by their
    overall standard deviation during the fit), ``steps`` iterations from zero.
    """
    positive, negative = jnp.asarray(positive), jnp.asarray(negative)
    if positive.ndim != 2 or negative.ndim != 2 or positive.shape[1] != negative.shape[1]:
        raise ValueError("positive and negative must be (n, d) and (m, d) with the same d, got "
                         f"{positive.shape} and {negative.shape}")
    a = jnp.concatenate([positive, negative]).astype(jnp.float32)
    y = jnp.concatenate([jnp.ones(len(positive)), jnp.zeros(len(negative))])
    return _fit(a, y, jnp.float32(l2), steps=steps)
