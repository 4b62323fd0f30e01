"""Modified-gradient methods: DeepLIFT (rescale), guided backpropagation, deconvnet, and
conservative propagation for transformers.

Each is the gradient of :func:`jaxplain.rewrite_backward` of the model with a small rule that
replaces the backward pass of the activations (and of the normalisers); linear layers keep
their plain gradient.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.attribution import _common, _model_checks
from jaxplain.attribution._lrp_rules import MIXING
from jaxplain.core import rewrite_backward
from jaxplain.core._batch import batch_axes, lost_by
from jaxplain.core._capture import program_of
from jaxplain.core._cpu import cpu_friendly
from jaxplain.core._sites import EXTREMA

# The pools and reductions that Rescale takes apart with the max rule (a min as -max(-x)): max
# pools, a max over the channels (maxout), a min over any non-batch axes.
_MAX_RULE = frozenset({"max_pool", *EXTREMA})

#: What works instead of DeepLIFT (and DeepLIFT-SHAP) for a model that only takes x's batch.
ON_X_BATCH = ("use a method that evaluates f on x's batch: the gradient family, LRP, occlusion, "
              "feature ablation, Shapley sampling, KernelSHAP or LIME")


@dataclasses.dataclass(frozen=True)
class Rescale:
    """DeepLIFT's rescale rule on a batch evaluated as ``concatenate([x, baseline])``.

    The first half of the batch holds the inputs, the second the references. At every
    elementwise activation ``y = h(z)`` (each ``jax.nn`` activation the kernel keeps as one
    node: relu, relu6, hard_silu, selu, mish, ...; not the mixing softmax and log-softmax) the
    cotangent of the inputs' half becomes ``g * (y - y_ref) / (z - z_ref)`` (where
    ``|z - z_ref| < eps``, its limit ``g * h'(z)``: the plain gradient of the model's own node,
    with its parameters, a ``leaky_relu``'s slope or an ``elu``'s alpha); the references get
    no gradient.
    The multipliers are computed in float32 at least (`eps` is 0 in float16) and cast to the
    cotangent's dtype.

    At a max pool the output difference is split at ``m = max(y, y_ref)``: ``g * (m - y_ref)``
    goes to the window's maximum of the input, ``g * (y - m)`` to the window's maximum of the
    reference, and the sum over both, divided by ``z - z_ref``, is the multiplier (the plain
    gradient where ``|z - z_ref| < eps``). So a window's contributions sum to
    ``g * (y - y_ref)``, as through an activation. This is Captum's max-pool rule; overlapping
    windows that share a maximum add their parts there. A max over the channels (a maxout
    unit's over its pieces) takes the same rule, and a min over any non-batch axes takes it
    as ``-max(-z)``: ``m = min(y, y_ref)``, the parts going to the minima.
    """

    eps: float = 1e-10

    def activation(self, op, x, y, g, pullback):
        if op in MIXING:
            return None
        n = x.shape[0] // 2
        gx = g[:n]
        plain = pullback(jnp.concatenate([gx, jnp.zeros_like(gx)]))[:n]  # g * h'(z)
        dz = _common.widen(x[:n]) - _common.widen(x[n:])
        dy = _common.widen(y[:n]) - _common.widen(y[n:])
        small = jnp.abs(dz) < self.eps
        rescaled = _common.widen(gx) * (dy / jnp.where(small, 1, dz))
        cotangent = jnp.where(small, _common.widen(plain), rescaled).astype(g.dtype)
        return jnp.concatenate([cotangent, jnp.zeros_like(g[n:])])

    def pool(self, op, x, y, g, pullback):
        if op not in _MAX_RULE:
            return None
        n = x.shape[0] // 2
        split = jnp.minimum if op == "reduce_min" else jnp.maximum
        m, gx = split(y[:n], y[n:]), g[:n]
        routed = pullback(jnp.concatenate([gx * (m - y[n:]), gx * (y[:n] - m)]))
        plain = pullback(jnp.concatenate([gx, jnp.zeros_like(gx)]))[:n]
        dz = _common.widen(x[:n]) - _common.widen(x[n:])
        small = jnp.abs(dz) < self.eps
        routed = _common.widen(routed[:n]) + _common.widen(routed[n:])
        cotangent = jnp.where(small, _common.widen(plain), routed / jnp.where(small, 1, dz))
        cotangent = cotangent.astype(plain.dtype)
        return jnp.concatenate([cotangent, jnp.zeros_like(cotangent)])


@dataclasses.dataclass(frozen=True)
class Guided:
    """Guided backpropagation: a ReLU passes only positive gradients where its input is > 0."""

    def activation(self, op, x, y, g):
        if op != "relu":
            return None
        return jnp.where(x > 0, jnp.maximum(g, 0), jnp.zeros_like(g))


@dataclasses.dataclass(frozen=True)
class Deconv:
    """Deconvnet: a ReLU passes the positive part of the gradient, whatever its input."""

    def activation(self, op, x, y, g):
        if op != "relu":
            return None
        return jnp.maximum(g, 0)


@dataclasses.dataclass(frozen=True)
class HoldConstant:
    """Attention weights (softmaxes) and normaliser scales (``1/sqrt(var + eps)``) get no
    gradient: the AH and LN rules of Ali et al. (2022)."""

    def activation(self, op, x, y, g):
        return jnp.zeros_like(x) if op in MIXING else None

    def normalizer(self, op, x, y, g):
        return jnp.zeros_like(g)


def check_batch_first(f: Callable, both) -> None:
    """Refuse a model in which an activation, max pool or max or min (`_MAX_RULE`) that
    :class:`Rescale` splits into halves has lost its batch axis (the kernel follows it through
    the model, see :func:`jaxplain.core._batch.batch_axes`) and does not hold `both`'s batch
    first either: the halves would be halves of another axis (of a graph's nodes, say)."""
    program, site_map = program_of(f, both, unrolled=True, warn=False)
    batch, m = batch_axes(program), both.shape[0]
    for i, node in enumerate(program.nodes):
        rescaled = node.activation is not None and node.activation not in MIXING
        if not rescaled and site_map.pools.get(i) not in _MAX_RULE:
            continue
        ref = next((r for r in node.ins if isinstance(r, int) and r in program.depends), None)
        shape = () if ref is None else tuple(program.avals[ref].shape)
        if ref is None or batch.get(ref) is not None or shape[:1] == (m,):
            continue
        name = site_map.node_names.get(i, node.activation or site_map.pools[i])
        cause, fix = lost_by(program, batch, ref)
        raise ValueError(
            f"deeplift evaluates f on x and its baselines stacked, a batch of {m}, and splits "
            f"the value entering {name!r} (shape {shape}) into the inputs' half and the "
            "references' half along its batch axis; but the batch axis of that value is lost "
            f"on the way from x (after {cause}) and its first axis is not the batch of {m}. "
            f"{fix[0].upper()}{fix[1:]}; or {ON_X_BATCH[0].lower()}{ON_X_BATCH[1:]}, or "
            "integrated_gradients.")


@functools.partial(jax.jit, static_argnames=("f",))
def _deeplift(f, x, target, baseline):
    n = x.shape[0]
    both = jnp.concatenate([x, baseline])
    check_batch_first(f, both)
    k = cpu_friendly(rewrite_backward(f, Rescale()))  # as in _common.target_gradient
    targets = jnp.concatenate([target, target])
    weights = jnp.concatenate([jnp.ones((n,), x.dtype), jnp.zeros((n,), x.dtype)])
    grad = jax.grad(lambda z: (_common.selected(k, z, targets) * weights).sum())(both)
    difference = _common.widen(x) - _common.widen(baseline)
    return (difference * _common.widen(grad[:n])).astype(x.dtype)


@functools.partial(jax.jit, static_argnames=("f", "rule"))
def rule_gradient(f, x, target, *, rule):
    return _common.target_gradient(rewrite_backward(f, rule), x, target)


def deeplift(f: Callable, x: Float[ArrayLike, "batch *feature"],
             target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""],
             *, baseline=None) -> Float[Array, "batch *feature"]:
    """DeepLIFT with the rescale rule (as Captum's ``DeepLift``).

    ``attr = (x - b) * g`` where ``g`` is the gradient of ``f_t`` with every activation's local
    derivative replaced by the difference quotient ``(h(z) - h(z_ref)) / (z - z_ref)`` between
    the input's and the baseline's forward passes. The attributions sum to
    ``f(x)_t - f(b)_t`` on ReLU networks, with max pools and maxout too (summation-to-delta).

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``; any JAX function: every
        elementwise ``jax.nn`` activation is rescaled (relu in all its spellings, relu6,
        hard_silu, gelu, selu, ...). Max pools split each window's difference between the
        input's and the reference's maxima (Captum's rule), and so does any other max or min
        over non-batch axes (maxout's ``z.max(-1)``, ``h.min((1, 2))``) but a normalisation's
        shift (``z - z.max(-1)``). Other elementwise nonlinearities (``h ** 2``, ``jnp.exp``,
        ``jnp.sin``: no activation) and ones that mix values (a softmax inside the model,
        ``jnp.sort``, such a shift) keep their plain gradient and break the sum; such a model
        gets a ``UserWarning``. Pass the logits: a final
        ``jax.nn.softmax`` (or log-softmax) has no rescale rule, so the sum is lost; such a
        model gets a ``UserWarning`` too.
      x: the inputs, batch first.
      target: the class to explain per example, shape ``(n,)``, or one int.
      baseline: the reference input: None (zeros), a scalar, or an array broadcastable to `x`.

    Returns:
      An array shaped like `x`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import deeplift
      >>> f = lambda x: jax.nn.relu(x @ jnp.array([[1.0], [1.0]]) - 1.0)
      >>> deeplift(f, jnp.array([[2.0, 1.0]]), 0)       # sums to f(x) - f(0) = 2
      Array([[1.3333334, 0.6666667]], dtype=float32)

    References:
      Shrikumar, Greenside, Kundaje. Learning Important Features Through Propagating Activation
      Differences. ICML 2017.
    """
    x, t = _common.check_arguments(f, x, target)
    b = _common.check_baseline(baseline, x)
    _common.check_batch_of(f, x, 2 * x.shape[0], "x and its baselines stacked",
                           instead=ON_X_BATCH)
    _model_checks.warn_if_products(f, x, Rescale(), "deeplift", "the attributions do not sum to "
                             "f(x)_t - f(b)_t")
    _model_checks.warn_if_softmax_output(f, x, "deeplift", "the attributions do not sum to "
                                   "f(x)_t - f(b)_t")
    _model_checks.warn_if_unruled_nonlinear(f, x, "deeplift", "the attributions do not sum to "
                                      "f(x)_t - f(b)_t")
    return _deeplift(f, x, t, b)


def guided_backprop(f: Callable, x: Float[ArrayLike, "batch *feature"],
                    target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""]
                    ) -> Float[Array, "batch *feature"]:
    """Guided backpropagation: the gradient with ReLUs passing only positive gradients.

    At each ReLU the backward pass is ``g_in = [z > 0] * max(g_out, 0)`` (Captum's
    ``GuidedBackprop``).

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``; its ReLUs in any spelling
        (``jax.nn.relu``, ``jnp.maximum(h, 0)``, ``jnp.clip(h, 0)``, ``h * (h > 0)``, ...).
        A model with none (only tanh, say) gets a ``UserWarning``: the result is its plain
        gradient.
      x: the inputs, batch first.
      target: the class to explain per example, shape ``(n,)``, or one int.

    Returns:
      An array shaped like `x`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import guided_backprop
      >>> w1, w2 = jnp.array([[1.0, -1.0], [2.0, 1.0]]), jnp.array([[1.0], [-1.0]])
      >>> f = lambda x: jax.nn.relu(x @ w1) @ w2
      >>> guided_backprop(f, jnp.array([[1.0, 1.0]]), 0)
      Array([[1., 2.]], dtype=float32)

    References:
      Springenberg, Dosovitskiy, Brox, Riedmiller. Striving for Simplicity: The All
      Convolutional Net. ICLR workshop 2015.
    """
    x, t = _common.check_arguments(f, x, target)
    _model_checks.warn_if_no_relu(f, x, Guided(), "guided_backprop")
    return rule_gradient(f, x, t, rule=Guided())


def deconvnet(f: Callable, x: Float[ArrayLike, "batch *feature"],
              target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""]
              ) -> Float[Array, "batch *feature"]:
    """Deconvnet: the gradient with ReLUs replaced by ReLUs of the gradient.

    At each ReLU the backward pass is ``g_in = max(g_out, 0)``, ignoring the forward input
    (Captum's ``Deconvolution``).

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``; its ReLUs in any spelling,
        as for :func:`guided_backprop`, and a ``UserWarning`` for a model with none.
      x: the inputs, batch first.
      target: the class to explain per example, shape ``(n,)``, or one int.

    Returns:
      An array shaped like `x`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import deconvnet
      >>> w1, w2 = jnp.array([[1.0, -1.0], [2.0, 1.0]]), jnp.array([[1.0], [1.0]])
      >>> f = lambda x: jax.nn.relu(x @ w1) @ w2
      >>> deconvnet(f, jnp.array([[1.0, -1.0]]), 0)    # both ReLUs pass, though one is off
      Array([[0., 3.]], dtype=float32)

    References:
      Zeiler, Fergus. Visualizing and Understanding Convolutional Networks. ECCV 2014.
    """
    x, t = _common.check_arguments(f, x, target)
    _model_checks.warn_if_no_relu(f, x, Deconv(), "deconvnet")
    return rule_gradient(f, x, t, rule=Deconv())


def conservative_propagation(f: Callable, x: Float[ArrayLike, "batch *feature"],
                             target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""]
                             ) -> Float[Array, "batch *feature"]:
    """LRP for transformers: gradient x input with attention weights and LayerNorm scales held
    constant (Ali et al.'s AH and LN rules).

    ``attr = x * g`` where ``g`` is the gradient of ``f_t`` with no gradient into any softmax
    (the attention weights ``p`` in ``p @ v``) or normaliser scale (``1/sqrt(var + eps)`` of a
    LayerNorm or RMSNorm). With those held fixed, a bias-free network of linear layers, ReLUs,
    attention, normalisation, residual adds and mean pooling is linear in `x` along the ray
    from 0, so the attributions sum to the target logit (conservation), which plain
    gradient x input and LRP's gradient through a LayerNorm do not give. It is what LRP-0 with
    the AH and LN rules computes; on a network with neither it is gradient x input.

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``; softmaxes are found as
        :func:`jaxplain.sites` finds them (``jax.nn.softmax`` over the last axis, as Flax's
        attention layers call it), normalisers as square roots of input-dependent values.
        Pass the logits: a final softmax would be held constant too, giving zeros (a
        ``UserWarning`` says so).
      x: the inputs, batch first (e.g. ``(n, tokens, features)`` embeddings).
      target: the class to explain per example, shape ``(n,)``, or one int.

    Returns:
      An array shaped like `x`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain.attribution import conservative_propagation
      >>> def f(x):   # one attention head over 2 tokens, then a sum: bias-free
      ...     p = jax.nn.softmax(x @ jnp.swapaxes(x, 1, 2))
      ...     return (p @ x).sum(axis=(1, 2))[:, None]
      >>> x = jnp.array([[[1.0, 0.0], [0.0, 2.0]]])
      >>> a = conservative_propagation(f, x, 0)
      >>> bool(jnp.allclose(a.sum(), f(x)[0, 0]))
      True

    References:
      Ali, Schnake, Eberle, Montavon, Müller, Wolf. XAI for Transformers: Better Explanations
      through Conservative Propagation. ICML 2022.
    """
    x, t = _common.check_arguments(f, x, target)
    _model_checks.warn_if_softmax_output(f, x, "conservative_propagation", "held constant like the "
                                   "attention weights, it lets no gradient through and the "
                                   "attributions are all zero")
    return x * rule_gradient(f, x, t, rule=HoldConstant())
