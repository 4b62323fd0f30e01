"""Infidelity: how well ``I · a`` predicts the output change under random perturbations ``I``."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.metrics import _checks as checks
from jaxplain.metrics import _draws as D
from jaxplain.metrics import _perturb as P
from jaxplain.metrics._faithfulness import _perturbed_copies, reading
from jaxplain.core._keys import check_key


@functools.partial(
    jax.jit, static_argnames=("f", "samples", "scaled", "output", "batch_size"))
def _infidelity(f, x, target, attribution, key, noise_scale, *, samples, scaled, output,
                batch_size):
    def copy(i, j):  # x_i − I_ij, and I_ij · a_i
        noise = D.gaussian(D.item_key(key, i, j), noise_scale, x[i])
        return (x[i] - noise).astype(x.dtype), (noise * attribution[i]).sum()

    y0, y, dot = D.evaluate_copies(f, x, copy, target, samples, output, batch_size)
    change = y0[:, None] - y
    dot = dot.astype(change.dtype)
    if scaled:  # the least-squares β of β (I · a) ≈ change, per example
        den = (dot * dot).sum(-1, keepdims=True)
        beta = jnp.where(den > 0, (dot * change).sum(-1, keepdims=True) / jnp.where(den > 0, den, 1),
                         0.0)
        dot = beta * dot
    return ((dot - change) ** 2).mean(-1)


def infidelity(
    f: Callable[[Array], Array],
    x: Float[ArrayLike, "batch *shape"],
    target: Int[ArrayLike, " batch"] | Int[ArrayLike, ""],
    attribution: Float[ArrayLike, "batch *shape"],
    *,
    key: Array,
    samples: int = 50,
    noise_scale: float = 0.1,
    scaled: bool = True,
    output: str = "logit",
    batch_size: int | None = None,
) -> Float[Array, " batch"]:
    """Infidelity ``E_I[(I · a − (f_t(x) − f_t(x − I)))²]`` under Gaussian perturbations.

    ``I ~ noise_scale · N(0, 1)`` elementwise over the whole input (every channel), ``samples``
    draws per example; the expectation is their mean. With ``scaled`` (the paper's code), the
    attribution is first multiplied by the ``β`` that minimises the error,
    ``β = Σ_s (I_s·a)(Δ_s) / Σ_s (I_s·a)²``, so the score judges the map's direction and not its
    scale. Lower is better; 0: ``I · a`` predicts every change (the gradient of a linear model).

    Draw ``s`` of example ``i`` is ``noise_scale * jax.random.normal(fold_in(fold_in(key, i),
    s), x.shape[1:])``, so an example's score does not depend on the other examples or
    ``batch_size``; all ``batch x samples`` perturbed inputs run in one compiled call.

    Args:
        f: Maps a batch to logits (or probabilities, see ``output``).
        x: ``(batch, *shape)`` inputs.
        target: ``(batch,)`` class indices or one int for all.
        attribution: ``(batch, *shape)`` relevance, shaped exactly like ``x`` (``I · a`` is
            taken over every element).
        key: PRNG key of the perturbations.
        samples: Perturbations per example (at least 2).
        noise_scale: Standard deviation of ``I``.
        scaled: Multiply the attribution by the optimal ``β`` first (Yeh et al.'s code); False
            gives the plain expectation.
        output: ``"logit"`` (the output as given; Quantus' default) or ``"probability"``.
        batch_size: Perturbed inputs per call of ``f`` (``None``: all at once on GPU/TPU, on CPU as
          many as keep a pass in cache).

    Returns:
        ``(batch,)`` the mean squared error over the draws.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> w = jnp.array([[1.0], [-2.0], [3.0]])
        >>> f = lambda x: x @ w
        >>> x = jnp.array([[0.5, 1.0, 2.0]])
        >>> infidelity(f, x, 0, w.T, key=jax.random.key(0)).round(6).tolist()   # the gradient
        [0.0]
        >>> float(infidelity(f, x, 0, x * w.T, key=jax.random.key(0))[0]) > 0.01
        True

    References:
        Yeh, Hsieh, Suggala, Inouye, Ravikumar, "On the (In)fidelity and Sensitivity of
        Explanations", NeurIPS 2019.
    """
    x, attribution, target = checks.checked(f, x, target, attribution)
    check_key(key)
    samples = checks.check_positive_int(samples, "samples", 2)
    noise_scale = D.check_scale(noise_scale, "noise_scale")
    checks.check_choice(output, "output", P.OUTPUTS)
    batch_size = checks.check_batch_size(batch_size)
    output = reading(f, x, output)
    _perturbed_copies(f, x, samples)
    return _infidelity(f, x, target, attribution, key, samples=samples,
                       noise_scale=noise_scale, scaled=bool(scaled), output=output,
                       batch_size=batch_size)
