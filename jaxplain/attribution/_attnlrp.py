"""AttnLRP (Achtibat et al. 2024): LRP for transformers, as a modified gradient times the input.

Relevance at any value ``z`` is ``R = z * G`` with ``G`` a modified gradient, so every linear
operation that is not a layer (a reshape, a mean subtraction, a sum, a residual add) follows the
ε-rule exactly through its plain gradient (up to the stabiliser). Only these places differ from
the gradient, and :func:`jaxplain.rewrite_backward` finds each of them in the traced program:

=============  =========================================  ====================================
place          AttnLRP rule (relevance form)              in gradient form
=============  =========================================  ====================================
linear layer   ε: ``x * W^T (R / stab(W x + b))``         ``W^T (G * z / stab(z))``
activation     identity: ``R_in = R_out``                 ``G * h(x) / x`` (ReLU: plain)
softmax        ``x * (R - s * sum(R))`` (Taylor at x)     the plain gradient
normaliser     identity on ``(x - mean) / std``           no gradient into ``std``
product        uniform: each factor gets ``R / 2``        half the plain gradient per factor
=============  =========================================  ====================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.attribution import _common, _model_checks
from jaxplain.attribution._lrp_rules import MIXING, share, transpose
from jaxplain.attribution._modified import rule_gradient


@dataclasses.dataclass(frozen=True)
class AttnLRPRules:
    """The AttnLRP rules as a :func:`jaxplain.rewrite_backward` rule in gradient form (the
    cotangent at a value ``z`` is ``R / z``); `epsilon` stabilises the ε-rule's denominators."""

    epsilon: float = 1e-6

    def linear(self, layer, x, g):
        z = layer(x)
        return transpose(layer, x, layer.weight, z * share(g, z, self.epsilon))

    def activation(self, op, x, y, g):
        if op == "relu" or op in MIXING:  # the identity rule is the gradient; softmax: see above
            return None
        zero = x == 0  # R_out = h(0) * g can not be carried by a zero input: dropped
        return jnp.where(zero, 0.0, g * y / jnp.where(zero, 1.0, x)).astype(g.dtype)

    def normalizer(self, op, x, y, g):
        return jnp.zeros_like(g)

    def product(self, op, a, b, y, g, pullback):
        ga, gb = pullback(g)
        return 0.5 * ga, 0.5 * gb


def attn_lrp(f: Callable, x: Float[ArrayLike, "batch *feature"],
             target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *,
             epsilon: float = 1e-6) -> Float[Array, "batch *feature"]:
    """AttnLRP: layer-wise relevance propagation with the attention-aware rules of Achtibat et al.

    The relevance of the target logit ``f_t(x)`` is propagated back with the ε-rule on linear
    layers, the identity rule on elementwise activations and on LayerNorm/RMSNorm (the scale
    ``1/std`` held fixed, the mean subtraction linear), the deep-Taylor rule at ``x`` on softmaxes
    (``R_in = x * (R - s * sum(R))``) and the uniform rule on products of two input-dependent
    values (``q k^T``, ``p v``, gates: each factor gets half). Computed as ``x * G`` with one
    modified backward pass. Relevance is conserved except at biases, ε, and softmaxes (whose
    rule absorbs ``s * sum(R)``); it equals LXT's ``lxt.explicit`` functional rules to float32
    precision (a test). On a network with neither softmax, normaliser nor product it is
    LRP-ε with the identity rule on activations.

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``. Softmaxes are found as
        :func:`jaxplain.sites` finds them (``jax.nn.softmax`` over the last axis, as Flax's
        attention calls it), normalisers as square roots of input-dependent values, products as
        multiplications and dot products of two input-dependent values.
      x: the inputs, batch first (pixels, or ``(n, tokens, features)`` embeddings).
      target: the class to explain per example, shape ``(n,)``, or one int.
      epsilon: the ε-rule's stabiliser (Zennit's sign-aware form).

    Returns:
      An array shaped like `x`: each input's relevance.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import attn_lrp
      >>> def f(x):   # a gated unit: the product of two linear maps of x
      ...     return ((x @ jnp.array([[1.0], [2.0]])) * (x @ jnp.array([[3.0], [-1.0]])))
      >>> x = jnp.array([[1.0, 1.0]])
      >>> r = attn_lrp(f, x, 0)   # uniform rule: each factor (3 and 2) passes half of f(x) = 6
      >>> jnp.round(r, 4), bool(jnp.allclose(r.sum(), f(x)[0, 0]))   # 3 * (1/3, 2/3) + 3 * (3/2, -1/2)
      (Array([[5.5, 0.5]], dtype=float32), True)

    References:
      Achtibat, Hatefi, Dreyer, Jain, Wiegand, Lapuschkin, Samek. AttnLRP: Attention-Aware
      Layer-Wise Relevance Propagation for Transformers. ICML 2024.
    """
    x, t = _common.check_arguments(f, x, target)
    _model_checks.warn_if_softmax_output(f, x, "attn_lrp", "the target's relevance is not conserved "
                                   "through it")
    return x * rule_gradient(f, x, t, rule=AttnLRPRules(float(epsilon)))
