"""A small L2-regularized logistic regression (the linear classifier behind a CAV)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["weight", "bias", "accuracy"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class LinearClassifier:
    """``p(positive | a) = sigmoid(a @ weight + bias)`` on the raw features ``a``.

    ``weight`` is the normal of the decision boundary ``a @ weight + bias = 0`` in the
    features' own space (pointing to the positive class).

    Attributes:
        weight: ``(d,)``; bias: scalar; accuracy: accuracy on the held-out examples (not
            fitted).
    """

    weight: Array
    bias: Array
    accuracy: Array


@functools.partial(jax.jit, static_argnames=("steps",))
def _fit(a, y, train, test, l2, *, steps):
    # ``train`` and ``test`` weigh the rows (1 or 0; padding rows are 0 in both), so every
    # set size in one size bucket shares one compiled fit.
    # Centre each feature (post-ReLU features have means of about one standard deviation, which
    # couples the bias to every weight) and divide by one overall scale, so the problem is well
    # conditioned and unit-free; the fit is folded back into the raw space at the end.
    n = jnp.sum(train)
    mean = (train @ a / n)[None, :]
    scale = jnp.maximum(jnp.sqrt(train @ jnp.square(a - mean).sum(axis=1) / (n * a.shape[1])),
                        1e-12)
    z = (a - mean) / scale
    params = (jnp.zeros(a.shape[1], a.dtype), jnp.zeros((), a.dtype))

    def loss(p):
        logits = z @ p[0] + p[1]
        ce = optax.sigmoid_binary_cross_entropy(logits, y)
        return train @ ce / n + l2 * jnp.sum(p[0] ** 2)

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
    correct = (((z @ p[0] + p[1]) > 0) == (y > 0.5)).astype(test.dtype)
    weight = p[0] / scale
    return LinearClassifier(weight, p[1] - mean[0] @ weight, test @ correct / jnp.sum(test))


def held_out(n: int, fraction: float) -> np.ndarray:
    """``(n,)`` bool: the examples of a set of ``n`` held out, ``round(fraction * n)`` of them
    (at least 1, at most ``n - 1``) spread evenly over the set (every third for 1/3)."""
    k = min(max(round(fraction * n), 1), n - 1)
    mask = np.zeros(n, bool)
    mask[((np.arange(k) + 0.5) * n / k).astype(int)] = True
    return mask


def bucket(n: int) -> int:
    """``n`` rounded up to a multiple of a quarter of its power of two (80 -> 80, 81 -> 96):
    sizes in one bucket share one compiled fit, padding at most a quarter."""
    step = max(1, 2 ** (max(n, 1).bit_length() - 1) // 4)
    return -(-n // step) * step


def fit_linear(positive: Float[ArrayLike, "n d"], negative: Float[ArrayLike, "m d"], *,
               l2: float = 1e-3, steps: int = 100, holdout: float = 1 / 3) -> LinearClassifier:
    """Fit logistic regression separating ``positive`` (label 1) from ``negative`` (label 0).

    A ``holdout`` fraction of each set (spread evenly over it; at least one example) is held
    out and the classifier's accuracy measured on those, as Kim et al.'s reference code holds
    out 33%: a training accuracy would be 1.0 whenever the features outnumber the examples.
    On the rest it minimizes the mean cross-entropy plus ``l2 * ||w||^2`` on the features
    centred per feature and divided by one overall standard deviation ``s`` (the bias is not
    penalized), by ``steps`` L-BFGS iterations from zero. That is scikit-learn's
    ``LogisticRegression(C=1 / (2 * l2 * s**2 * n))`` on the ``n`` raw training features; the
    returned weight and bias are in the raw space. The rows are padded (with zero weight) to a
    size bucket, so sets of nearby sizes share one compilation.

    Example:
        >>> clf = fit_linear(concept_acts, random_acts)   # (n, d), (m, d)
        >>> float(clf.accuracy)                           # held-out: 1.0 on separable data
    """
    positive, negative = jnp.asarray(positive), jnp.asarray(negative)
    if positive.ndim != 2 or negative.ndim != 2 or positive.shape[1] != negative.shape[1]:
        raise ValueError("positive and negative must be (n, d) and (m, d) with the same d, got "
                         f"{positive.shape} and {negative.shape}")
    if len(positive) < 2 or len(negative) < 2:
        raise ValueError("positive and negative need at least 2 examples each (one to fit, one "
                         f"to hold out), got {len(positive)} and {len(negative)}")
    check_options(steps, holdout)
    return fit_rows(positive, negative, rows=bucket(len(positive) + len(negative)), l2=l2,
                    steps=steps, holdout=holdout)


def check_options(steps: int, holdout: float) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout!r}")


def fit_rows(positive: Float[Array, "n d"], negative: Float[Array, "m d"], *, rows: int,
             l2: float, steps: int, holdout: float) -> LinearClassifier:
    """:func:`fit_linear` (unchecked) on the examples padded to ``rows >= n + m`` rows: each
    ``rows`` compiles once, whatever the set sizes."""
    n, m = len(positive), len(negative)
    pad = rows - n - m
    a = jnp.concatenate([positive.astype(jnp.float32), negative.astype(jnp.float32),
                         jnp.zeros((pad, positive.shape[1]), jnp.float32)])
    y = np.concatenate([np.ones(n), np.zeros(m + pad)]).astype(np.float32)
    test = np.concatenate([held_out(n, holdout), held_out(m, holdout), np.zeros(pad, bool)])
    train = np.concatenate([np.ones(n + m, bool), np.zeros(pad, bool)]) & ~test
    return _fit(a, y, train.astype(np.float32), test.astype(np.float32), jnp.float32(l2),
                steps=steps)
