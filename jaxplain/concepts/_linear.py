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
    """``p(positive | a) = sigmoid(a @ weight + bias)`` on the raw features ``a``.

    ``weight`` is the normal of the decision boundary ``a @ weight + bias = 0`` in the
    features' own space (pointing to the positive class).

    Attributes:
        weight: ``(d,)``; bias: scalar; accuracy: training accuracy.
    """

    weight: Array
    bias: Array
    accuracy: Array


@functools.partial(jax.jit, static_argnames=("steps",))
def _fit(a, y, l2, *, steps):
    # Centre each feature (post-ReLU features have means of about one standard deviation, which
    # couples the bias to every weight) and divide by one overall scale, so the problem is well
    # conditioned and unit-free; the fit is folded back into the raw space at the end.
    mean = jnp.mean(a, axis=0)
    scale = jnp.maximum(jnp.std(a - mean), 1e-12)
    z = (a - mean) / scale
    params = (jnp.zeros(a.shape[1], a.dtype), jnp.zeros((), a.dtype))

    def loss(p):
        logits = z @ p[0] + p[1]
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y)) + l2 * jnp.sum(p[0] ** 2)

    # L-BFGS with a line search: the loss decreases at every step (full-batch Adam spiked late
    # and could end at chance) and reaches the optimum in tens of steps.
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        p, s = carry
        value, g = value_and_grad(p, state=s)
        u, s = opt.update(g, s, p, value=value, grad=g, value_fn=loss)
        return (optax.apply_updates(p, u), s), None

    (p, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    acc = jnp.mean(((z @ p[0] + p[1]) > 0) == (y > 0.5))
    weight = p[0] / scale
    return LinearClassifier(weight, p[1] - mean @ weight, acc)


def fit_linear(positive: Float[Array, "n d"], negative: Float[Array, "m d"], *,
               l2: float = 1e-3, steps: int = 100) -> LinearClassifier:
    """Fit logistic regression separating ``positive`` (label 1) from ``negative`` (label 0).

    Minimizes the mean cross-entropy plus ``l2 * ||w||^2`` on the features centred per feature
    and divided by one overall standard deviation ``s`` (the bias is not penalized), by
    ``steps`` L-BFGS iterations from zero. That is scikit-learn's
    ``LogisticRegression(C=1 / (2 * l2 * s**2 * (n + m)))`` on the raw features; the returned
    weight and bias are in the raw space.

    Example:
        >>> clf = fit_linear(concept_acts, random_acts)   # (n, d), (m, d)
        >>> float(clf.accuracy)                           # 1.0 on separable data
    """
    positive, negative = jnp.asarray(positive), jnp.asarray(negative)
    if positive.ndim != 2 or negative.ndim != 2 or positive.shape[1] != negative.shape[1]:
        raise ValueError("positive and negative must be (n, d) and (m, d) with the same d, got "
                         f"{positive.shape} and {negative.shape}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    a = jnp.concatenate([positive, negative]).astype(jnp.float32)
    y = jnp.concatenate([jnp.ones(len(positive)), jnp.zeros(len(negative))])
    return _fit(a, y, jnp.float32(l2), steps=steps)
