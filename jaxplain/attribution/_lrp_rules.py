"""LRP rules as small frozen values, numerically as Zennit's, and composites of them.

A rule implements ``linear(layer, x, g) -> R_in``: given a linear layer (its effective weight
``W`` and bias ``b``, and ``layer.apply(x, w)`` computing ``x -> W x`` for any weight shaped like
``W``), its input activations ``a`` and the relevance ``R`` arriving at its output (the
cotangent of :func:`jaxplain.rewrite_backward`), it returns the relevance of its input. With
``W^T s`` the transpose of ``apply`` and ``stab(z) = z + eps * sign(z)`` (``sign(0) = +1``):

=========  ===================================================================================
Epsilon    ``a * W^T (R / stab(W a + b))``
ZPlus      AlphaBeta(1, 0)
AlphaBeta  ``alpha (a+ W+^T s+ + a- W-^T s+) - beta (a+ W-^T s- + a- W+^T s-)``,
           ``s+ = R / stab(W+ a+ + W- a- + b+)``, ``s- = R / stab(W- a+ + W+ a- + b-)``
ZBox       ``a W^T s - l W+^T s - h W-^T s``, ``s = R / stab(W a - W+ l - W- h)``
Flat       ``1^T s`` through unit weights, ``s = R / stab(1 1)`` (bias dropped)
WSquare    ``(W^2)^T s``, ``s = R / stab(W^2 1 + b^2)``
Gamma      Zennit's generalized gamma rule (positive and negative outputs apart)
=========  ===================================================================================

The rules' arithmetic runs in float32 at least (a :class:`Composite` hands its rules the layer,
its input and the relevance widened, and casts the input relevance back): in float16, a dead
unit's ``R / stab(0) = R / 1e-6`` would overflow, and 0 times that infinity be ``nan``.

References:
  Bach et al. On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise
  Relevance Propagation. PLoS ONE 2015. Montavon et al. Explaining nonlinear classification
  decisions with deep Taylor decomposition. Pattern Recognition 2017. Montavon et al.
  Layer-Wise Relevance Propagation: An Overview. 2019. Anders et al. Software for Dataset-wide
  XAI: From Local Explanations to Global Insights with Zennit, CoRelAy, and ViRelAy. 2021.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.attribution._common import widen


def stabilize(z, eps: float):
    """``z + eps * sign(z)`` with ``sign(0) = +1`` (Zennit's stabilizer)."""
    return z + jnp.where(z >= 0, eps, -eps).astype(z.dtype)


def share(g, z, eps: float):
    """``g / stab(z)`` in float32 at least, and 0 where the stabilised denominator is 0.

    With ``eps > 0`` the denominator never is 0 and this is the plain quotient; with
    ``eps = 0`` (LRP-0) a unit whose ``z`` is exactly 0 (a dead unit, zero inputs, no bias)
    passes on no relevance, the usual convention, instead of ``0 / 0 = nan``.
    """
    g, d = widen(g), stabilize(widen(z), eps)
    zero = d == 0
    return jnp.where(zero, 0, g / jnp.where(zero, 1, d))


def narrow(s, dtype):
    """`s` cast to `dtype`, clipped to its finite range: a share past float16's 65504 (a dead
    unit's ``R / 1e-6``) meets only zero weights, where an infinity would give ``0 * inf = nan``."""
    if s.dtype == dtype:
        return s
    big = float(jnp.finfo(dtype).max)
    return jnp.clip(s, -big, big).astype(dtype)


def transpose(layer, x, w, s):
    """``W^T s`` for the layer's linear map with weight `w`, shaped like `x` and in its dtype.

    `s` is cast to the dtype of the map's output (:func:`narrow`): a layer whose product keeps
    the model's dtype whatever its operands' (``x @ w`` records it) is transposed in that one."""
    out, pullback = jax.vjp(lambda v: layer.apply(v, w), x)
    return pullback(narrow(s, out.dtype))[0]


def _check_stabilizer(value) -> None:
    if not value >= 0:
        raise ValueError(f"stabilizer must be >= 0; got {value}")


def _static(rule, *names) -> None:
    """Turn the rule's numeric fields `names` that hold a list, tuple, NumPy or concrete JAX
    value into Python numbers (nested tuples for arrays), so the rule stays hashable: rules are
    static, equal rules share one compiled program. A traced value raises a TypeError saying
    so, a ragged or non-numeric list a ValueError."""
    for name in names:
        value = getattr(rule, name)
        if isinstance(value, jax.core.Tracer):
            raise TypeError(
                f"{type(rule).__name__}.{name} is traced (a value inside jit, vmap or grad): "
                f"rule parameters are static, equal rules share one compiled program, so pass "
                f"a Python number; to sweep it, loop in Python (each value compiles once).")
        if isinstance(value, (list, tuple, jax.Array, np.ndarray, np.generic)):
            try:
                array = np.asarray(value, dtype=float)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{type(rule).__name__}.{name} must be a number or an array of "
                                 f"numbers (a list or tuple of one per channel); got "
                                 f"{value!r}") from err
            object.__setattr__(rule, name, _nested(array))


def _nested(a: np.ndarray):
    return a.item() if a.ndim == 0 else tuple(_nested(item) for item in a)


def _pos(v):
    return jnp.maximum(v, 0)


def _neg(v):
    return jnp.minimum(v, 0)


@dataclasses.dataclass(frozen=True)
class Epsilon:
    """LRP-epsilon (``epsilon=0`` is LRP-0); the bias counts in the denominator.

    With ``epsilon=0`` a unit whose ``z = W a + b`` is exactly 0 passes on no relevance (0,
    not ``nan``). `epsilon` is this rule's own: average pools, means and residual additions
    keep the stabiliser of their :class:`Composite` (``stabilizer``, 1e-6 by default, as
    Zennit's Norm rule keeps its own next to any Epsilon). For relevance conserved to the
    last digit in float64 set both, ``Composite(default=Epsilon(0.0), stabilizer=0.0)``.
    """

    epsilon: float = 1e-6

    def __post_init__(self):
        _static(self, "epsilon")
        if not self.epsilon >= 0:
            raise ValueError(f"Epsilon needs epsilon >= 0 (a stabiliser); got {self.epsilon}")

    def linear(self, layer, x, g):
        s = share(g, layer.apply(x, layer.weight) + layer.bias, self.epsilon)
        return x * transpose(layer, x, layer.weight, s)


@dataclasses.dataclass(frozen=True)
class AlphaBeta:
    """LRP-alpha-beta: positive contributions weighted by alpha, negative ones by beta.

    ``alpha - beta = 1`` conserves relevance; Zennit only accepts those, we accept any
    non-negative pair. Negative inputs count through the opposite-signed weights.
    """

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6

    def __post_init__(self):
        _static(self, "alpha", "beta", "stabilizer")
        if self.alpha < 0 or self.beta < 0:
            raise ValueError(f"alpha and beta must be >= 0; got alpha={self.alpha}, beta={self.beta}")

    def linear(self, layer, x, g):
        w, b = layer.weight, layer.bias
        wp, wn, xp, xn = _pos(w), _neg(w), _pos(x), _neg(x)
        zp = layer.apply(xp, wp) + layer.apply(xn, wn) + _pos(b)
        sp = share(g, zp, self.stabilizer)
        r = self.alpha * (xp * transpose(layer, x, wp, sp) + xn * transpose(layer, x, wn, sp))
        if self.beta:
            zn = layer.apply(xp, wn) + layer.apply(xn, wp) + _neg(b)
            sn = share(g, zn, self.stabilizer)
            r = r - self.beta * (xp * transpose(layer, x, wn, sn) + xn * transpose(layer, x, wp, sn))
        return r


@dataclasses.dataclass(frozen=True)
class ZPlus:
    """LRP-z+ (deep Taylor for ReLU layers): AlphaBeta(1, 0)."""

    stabilizer: float = 1e-6

    def __post_init__(self):
        _static(self, "stabilizer")

    def linear(self, layer, x, g):
        return AlphaBeta(1.0, 0.0, self.stabilizer).linear(layer, x, g)


def _bound(value, x, axis: int | None, name: str):
    """A ZBox bound that broadcasts to `x`: a float, or one value per channel put on the layer's
    input axis `axis` (the channels of NHWC or NCHW images), or any array that broadcasts."""
    v = jnp.asarray(value, x.dtype)
    if v.ndim == 1 and axis is not None and v.shape[0] == x.shape[axis] > 1:
        v = v.reshape([-1 if a == axis % x.ndim else 1 for a in range(x.ndim)])
    try:
        jnp.broadcast_shapes(v.shape, x.shape)
    except ValueError as err:
        raise ValueError(f"ZBox {name} of shape {v.shape} does not fit the layer's input "
                         f"{x.shape}: give a float or one value per input channel "
                         f"({x.shape[axis] if axis is not None else '?'})") from err
    return v


def _examples_apart(layer, x) -> bool:
    """Whether the layer maps the examples on the first axis of its input `x` apart (as in a
    batch-first model): they are its batch axis, it reads another axis, and one example gives
    one example's output."""
    if (not x.ndim or x.shape[0] == 1 or getattr(layer, "in_axis", None) in (None, 0)
            or getattr(layer, "batch_axis", None) != 0):
        return False
    w = jax.ShapeDtypeStruct(jnp.shape(layer.weight), jnp.result_type(layer.weight))
    full = jax.eval_shape(layer.apply, jax.ShapeDtypeStruct(x.shape, x.dtype), w).shape
    try:
        one = jax.eval_shape(layer.apply, jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype), w)
    except (TypeError, ValueError):
        return False
    return bool(full) and one.shape == (1, *full[1:])


def _one_example(layer, x, *values) -> list:
    """`values`, which broadcast to `x`, broadcast to one example of it, ``(1, *x.shape[1:])``,
    where they are the same for every example and the layer maps the examples apart; else to
    the whole of `x` (a value given per example stays so).

    ``layer.apply`` of such a value (a ZBox bound, Flat's and WSquare's ones) depends on no
    input: on the whole batch, XLA folded it into a constant while compiling, a batch-sized
    convolution in its slow evaluator (EpsilonGammaBox on a narrow ResNet-18 at batch 128:
    first call 13-14 s, 8-9 s on one example). Computed once, it broadcasts over the batch.
    """
    values = [jnp.reshape(v, (1,) * (x.ndim - jnp.ndim(v)) + jnp.shape(v)) for v in values]
    apart = any(v.shape[0] == 1 for v in values) and _examples_apart(layer, x)
    return [jnp.broadcast_to(v, (1, *x.shape[1:]) if apart and v.shape[0] == 1 else x.shape)
            for v in values]


@dataclasses.dataclass(frozen=True)
class ZBox:
    """LRP-z^B for inputs bounded in ``[low, high]`` (deep Taylor for pixels).

    `low` and `high` are floats, or lists or tuples of one value per channel of the layer's
    input (on its channel axis: last for NHWC images, second for NCHW ones), or arrays that
    broadcast to it; lists and arrays are kept as tuples, so that the rule stays hashable.
    They bound the values the layer reads: after any input normalisation the model does.
    Bounds of sizes that do not broadcast together are a ValueError naming both. The bias
    cancels (``b - b+ - b- = 0``) as in Zennit.
    """

    low: float | tuple = 0.0
    high: float | tuple = 1.0
    stabilizer: float = 1e-6

    def __post_init__(self):
        _static(self, "low", "high", "stabilizer")
        _check_stabilizer(self.stabilizer)
        try:
            np.broadcast_shapes(np.shape(self.low), np.shape(self.high))
        except ValueError:
            raise ValueError(f"ZBox bounds low={self.low} and high={self.high} do not fit "
                             f"together (shapes {np.shape(self.low)} and {np.shape(self.high)}): "
                             f"give each as a float or one value per input channel") from None
        if not np.all(np.asarray(self.low) <= np.asarray(self.high)):
            raise ValueError(f"ZBox needs low <= high; got low={self.low}, high={self.high}")

    def linear(self, layer, x, g):
        w = layer.weight
        wp, wn = _pos(w), _neg(w)
        axis = getattr(layer, "in_axis", None)
        lo, hi = _one_example(layer, x, _bound(self.low, x, axis, "low"),
                              _bound(self.high, x, axis, "high"))
        z = layer.apply(x, w) - layer.apply(lo, wp) - layer.apply(hi, wn)
        s = share(g, z, self.stabilizer)  # with W = W+ + W-, two transposes, not three
        return (x - lo) * transpose(layer, x, wp, s) + (x - hi) * transpose(layer, x, wn, s)


@dataclasses.dataclass(frozen=True)
class Flat:
    """LRP-flat: relevance spread uniformly over the receptive field (unit weights, no bias)."""

    stabilizer: float = 1e-6

    def __post_init__(self):
        _static(self, "stabilizer")

    def linear(self, layer, x, g):
        [ones], w1 = _one_example(layer, x, jnp.ones((), x.dtype)), jnp.ones_like(layer.weight)
        s = share(g, layer.apply(ones, w1), self.stabilizer)
        return transpose(layer, x, w1, s)


@dataclasses.dataclass(frozen=True)
class WSquare:
    """LRP-w^2: relevance spread by squared weights (squared bias in the denominator)."""

    stabilizer: float = 1e-6

    def __post_init__(self):
        _static(self, "stabilizer")

    def linear(self, layer, x, g):
        w2 = layer.weight ** 2
        [ones] = _one_example(layer, x, jnp.ones((), x.dtype))
        s = share(g, layer.apply(ones, w2) + layer.bias ** 2, self.stabilizer)
        return transpose(layer, x, w2, s)


@dataclasses.dataclass(frozen=True)
class Gamma:
    """Generalized LRP-gamma (Zennit): favour contributions of the output's own sign.

    Positive outputs (``W a + b > 0``) are redistributed with ``(W + gamma W+)`` on positive and
    ``(W + gamma W-)`` on negative inputs, negative outputs the other way round.
    """

    gamma: float = 0.25
    stabilizer: float = 1e-6

    def __post_init__(self):
        _static(self, "gamma", "stabilizer")
        _check_stabilizer(self.stabilizer)
        if not self.gamma >= 0:
            raise ValueError(f"Gamma needs gamma >= 0; got {self.gamma}")

    def linear(self, layer, x, g):
        w, b, k = layer.weight, layer.bias, self.gamma
        up, down = w + k * _pos(w), w + k * _neg(w)
        xp, xn = _pos(x), _neg(x)
        z = layer.apply(x, w) + b
        z_pos = layer.apply(xp, up) + (b + k * _pos(b)) + layer.apply(xn, down)
        z_neg = layer.apply(xp, down) + (b + k * _neg(b)) + layer.apply(xn, up)
        sp = share(jnp.where(z > 0, g, 0), z_pos, self.stabilizer)
        sn = share(jnp.where(z < 0, g, 0), z_neg, self.stabilizer)
        return (xp * transpose(layer, x, up, sp) + xn * transpose(layer, x, down, sp)
                + xp * transpose(layer, x, down, sn) + xn * transpose(layer, x, up, sn))


def check_rule(rule: Any, where: str = "rules") -> None:
    """TypeError unless `rule` is an LRP rule instance (an object with ``linear``)."""
    if isinstance(rule, type):
        raise TypeError(f"{where} is the class {rule.__name__}; pass an instance, "
                        f"{rule.__name__}()")
    if not hasattr(rule, "linear"):
        raise TypeError(f"{where} must be an LRP rule (Epsilon(), ZPlus(), AlphaBeta(2, 1), ...); "
                        f"got {rule!r}")


def _matches(selector, layer) -> bool:
    """Whether `selector` picks the linear layer: a name or glob (or a tuple of them) against
    its name; a predicate of the name alone, or ``(name, layer)`` as the kernel's selectors
    take ``(name, site)`` (the layer is the :class:`~jaxplain.core.LinearLayer`: ``op`` is
    ``"conv"`` or ``"dense"``, ``is_input``, ``weight``)."""
    if callable(selector):
        try:
            inspect.signature(selector).bind(layer.name, layer)
        except TypeError:
            return bool(selector(layer.name))
        except ValueError:                     # no signature (a builtin): the name alone
            return bool(selector(layer.name))
        return bool(selector(layer.name, layer))
    patterns = (selector,) if isinstance(selector, str) else tuple(selector)
    return any(fnmatch.fnmatchcase(layer.name, p) for p in patterns)


# Activations that mix their inputs (not one output per input): no Pass; attention weights.
MIXING = frozenset({"softmax", "log_softmax"})


@dataclasses.dataclass(frozen=True)
class SignalTakeAll:
    """A rule for gated products ``y = gate * signal`` (a squeeze-and-excitation block's channel
    gate, an LSTM's input and output gates, a GLU): the signal takes the whole relevance and the
    gate none, as if the gate were a weight (Arras et al. 2017, "signal-take-all"), which
    conserves relevance through the product. Give it to a :class:`Composite` as ``products=``.

    The gate is chosen from the program, the same for every example: the factor that is a
    sigmoid's or hard sigmoid's output (``gates``, which :func:`jaxplain.rewrite_backward`
    reads from the program, through layout ops such as an SE gate's ``[:, None, None, :]``);
    when neither or both are, the factor broadcast over more positions (the SE gate
    ``(n, 1, 1, c)`` against the features ``(n, h, w, c)``); between factors of one shape, the
    first (Flax's and Equinox's LSTM cells write the gate first: ``o * tanh(c)``, ``i * g``).
    A product of two matrices (attention) keeps its plain gradient: see
    :func:`jaxplain.attribution.attn_lrp` for that.

    ``product(op, a, b, y, g, pullback, gates)``: `a`, `b` the factors, `y` their product and
    `g` the relevance of `y` (its cotangent), `gates` a pair of bools (is `a`, `b` a gate
    activation's output); returns the cotangents of `a` and `b`.
    """

    def product(self, op, a, b, y, g, pullback, gates=(False, False)):
        if op != "mul":
            return None
        if gates[0] != gates[1]:
            gate_is_b = gates[1]
        else:  # structure decides nothing: the broadcast factor, else the first
            gate_is_b = a.shape != b.shape and b.size < a.size
        to_signal = jax.vjp(lambda s: jnp.broadcast_to(s, y.shape), a if gate_is_b else b)[1](g)[0]
        return ((to_signal.astype(a.dtype), jnp.zeros_like(b)) if gate_is_b
                else (jnp.zeros_like(a), to_signal.astype(b.dtype)))


@dataclasses.dataclass(frozen=True)
class Composite:
    """Rules assigned to linear layers by site filter, plus a conserving residual-add rule.

    A layer gets the rule of the first matching entry of `layers` (a name, a glob, a tuple of
    them, or a predicate: of the layer name, or ``(name, layer)`` with the
    :class:`~jaxplain.core.LinearLayer`), else `first` if it consumes the model's input and
    its kind is in `first_ops`, else `conv` or `dense` by its kind, else `default`; None means
    the plain gradient there.
    Activations (ReLU, tanh, sigmoid, GELU, ...) pass relevance through unchanged by default
    (``activations="pass"``, Zennit's Pass rule, which its presets put on every activation): an
    elementwise activation belongs to its neuron, so ``R(z) = R(h(z))`` and relevance is
    conserved through it. ``activations="gradient"`` multiplies by the derivative instead (on a
    ReLU network the same wherever relevance reaches no dead unit, i.e. behind every rule that
    multiplies by its input: all but Flat and WSquare). A softmax (attention weights), which
    mixes its inputs, gets its gradient, as in Zennit, whose Pass does not cover it (for
    transformers see :func:`jaxplain.attribution.conservative_propagation`).
    Residual additions ``y = a + b`` split relevance in proportion, ``R_a = a R / stab(y)``,
    and so do average pools, global means and the other sums of several input-dependent terms
    (a sum over any axes but the batch, ``segment_sum``, ``cumsum``; not the mean, variance or
    total of a normalisation), ``R_i = x_i R_window / stab(sum of the window)`` (Zennit's Norm
    rule, which its presets put on sums and average pools, adaptive ones included), so that
    relevance is conserved; max pools pass relevance to the window's maximum (their gradient).
    Products of two input-dependent values (gates, attention) keep their plain gradient, which
    gives the whole relevance to both factors (`lrp` warns), unless ``products`` is a rule with
    a ``product`` method: :class:`SignalTakeAll` for gated units such as squeeze-and-excitation.
    A BatchNorm (any per-channel scale by constants) right after a linear layer is folded into
    that layer's weight and bias; one that is not (after an activation, a pool or a residual
    sum, on the input, or after a layer whose output another op reads too) multiplies the
    relevance by its scale, its plain gradient, with ``scales="gradient"`` (the default, as a
    Zennit ``LayerMapComposite`` without a BatchNorm entry), or passes it on unchanged with
    ``scales="pass"`` (Zennit's Pass rule, which its presets put on every BatchNorm, and so
    do ours), which conserves it.

    ``stabilizer`` is that Norm rule's ``stab`` (sums and pools), apart from the rules' own
    epsilons as in Zennit, whose presets keep ``Norm(stabilizer=1e-6)`` whatever their
    ``epsilon``: a single rule such as ``Epsilon(1e-12)`` becomes ``Composite(default=rule)``
    and keeps 1e-6 there, which lets a window's sum lose a share of about ``1e-6 / sum`` of its
    relevance (below float32's resolution, visible in float64). Pass ``stabilizer=0.0`` for
    exact conservation (a window or sum that is exactly 0 then passes on no relevance). An
    epsilon is not carried over because a large one (``Epsilon(0.25)``, to absorb noise) would
    distort the pools' proportions.

    Example:
      >>> from jaxplain.lrp import Composite, Epsilon, EpsilonPlusFlat, Flat, ZPlus
      >>> preset = Composite(first=Flat(), conv=ZPlus(), dense=Epsilon(1e-6), scales="pass")
      >>> preset == EpsilonPlusFlat()
      True
    """

    default: Any = None
    first: Any = None
    conv: Any = None
    dense: Any = None
    layers: tuple = ()
    stabilizer: float = 1e-6
    first_ops: tuple = ("conv", "dense")
    activations: str = "pass"
    products: Any = None
    scales: str = "gradient"

    def __post_init__(self):
        _static(self, "stabilizer")
        if self.activations not in ("pass", "gradient"):
            raise ValueError("activations must be 'pass' or 'gradient'; got "
                             f"{self.activations!r}")
        if self.scales not in ("pass", "gradient"):
            raise ValueError(f"scales must be 'pass' or 'gradient'; got {self.scales!r}")
        for entry in self.layers:
            if not (isinstance(entry, tuple) and len(entry) == 2):
                raise TypeError("layers must hold (selector, rule) pairs, e.g. "
                                f"layers=(('conv1', ZPlus()),); got the entry {entry!r}")
            check_rule(entry[1], f"the rule for {entry[0]!r}")
        for name in ("default", "first", "conv", "dense"):
            if getattr(self, name) is not None:
                check_rule(getattr(self, name), name)
        if self.products is not None and not hasattr(self.products, "product"):
            raise TypeError("products must be a rule with a product method, e.g. "
                            f"SignalTakeAll(); got {self.products!r}")
        unknown = set(self.first_ops) - {"conv", "dense"}
        if unknown:
            raise ValueError(f"first_ops must name 'conv' and/or 'dense'; got {self.first_ops!r}")
        _check_stabilizer(self.stabilizer)

    def selectors(self) -> tuple[str, ...]:
        """The names and globs of `layers` (predicates left out)."""
        found = []
        for selector, _ in self.layers:
            if isinstance(selector, str):
                found.append(selector)
            elif not callable(selector):
                found.extend(selector)
        return tuple(found)

    def rule_for(self, layer) -> Any:
        for selector, rule in self.layers:
            if _matches(selector, layer):
                return rule
        if layer.is_input and self.first is not None and layer.op in self.first_ops:
            return self.first
        by_kind = {"conv": self.conv, "dense": self.dense}.get(layer.op)
        return by_kind if by_kind is not None else self.default

    def linear(self, layer, x, g):
        rule = self.rule_for(layer)
        if rule is None:
            return None
        wide = dataclasses.replace(layer, weight=widen(layer.weight),
                                   bias=widen(jnp.asarray(layer.bias)))
        return rule.linear(wide, widen(x), widen(g)).astype(x.dtype)

    def activation(self, op, x, y, g):
        return g if self.activations == "pass" and op not in MIXING else None

    def add(self, a, b, y, g):
        s = share(g, y, self.stabilizer)
        return (widen(a) * s).astype(a.dtype), (widen(b) * s).astype(b.dtype)

    def pool(self, op, x, y, g, pullback):
        if op not in ("avg_pool", "mean"):
            return None
        spread = pullback(narrow(share(g, y, self.stabilizer), y.dtype))
        return (widen(x) * widen(spread)).astype(x.dtype)

    def sum(self, op, x, y, g, pullback):  # any sum of terms: the Norm rule, as a mean's
        return self.pool("mean", x, y, g, pullback)

    @property
    def scale(self):
        """At a per-channel scale that folds into no layer (a BatchNorm after an activation):
        the Pass rule with ``scales="pass"``; absent (the plain gradient) otherwise."""
        if self.scales != "pass":
            raise AttributeError("scale")
        return _pass_scale

    @property
    def product(self):
        """`products`' rule at products; absent (the plain gradient there) when it is None."""
        if self.products is None:
            raise AttributeError("product")
        return self.products.product


def _pass_scale(op, x, y, g):
    """Zennit's Pass rule at a per-channel scale: the relevance of ``y`` goes to ``x``."""
    return g


# Zennit's presets: Pass on every activation and every BatchNorm that is not folded.
def EpsilonPlus(epsilon: float = 1e-6) -> Composite:  # noqa: N802 (Zennit's preset names)
    """z+ on convolutions, epsilon on dense layers (Zennit's preset)."""
    return Composite(conv=ZPlus(), dense=Epsilon(epsilon), scales="pass")


def EpsilonPlusFlat(epsilon: float = 1e-6) -> Composite:  # noqa: N802
    """Flat on the input layer, z+ on convolutions, epsilon on dense layers (Zennit's preset)."""
    return Composite(first=Flat(), conv=ZPlus(), dense=Epsilon(epsilon), scales="pass")


def EpsilonAlpha2Beta1(epsilon: float = 1e-6) -> Composite:  # noqa: N802
    """AlphaBeta(2, 1) on convolutions, epsilon on dense layers (Zennit's preset)."""
    return Composite(conv=AlphaBeta(2.0, 1.0), dense=Epsilon(epsilon), scales="pass")


def EpsilonAlpha2Beta1Flat(epsilon: float = 1e-6) -> Composite:  # noqa: N802
    """Flat on the input layer, AlphaBeta(2, 1) on convolutions, epsilon on dense layers."""
    return Composite(first=Flat(), conv=AlphaBeta(2.0, 1.0), dense=Epsilon(epsilon),
                     scales="pass")


def EpsilonGammaBox(low: float | tuple = 0.0, high: float | tuple = 1.0,  # noqa: N802
                    epsilon: float = 1e-6, gamma: float = 0.25) -> Composite:
    """ZBox on the input layer if it is a convolution (as Zennit's preset: a dense input layer
    gets epsilon), gamma on the other convolutions, epsilon on dense layers."""
    return Composite(first=ZBox(low, high), conv=Gamma(gamma), dense=Epsilon(epsilon),
                     first_ops=("conv",), scales="pass")


def as_composite(rules: Any) -> Composite:
    """A Composite from one rule (used everywhere), a Composite, or ``(selector, rule)`` pairs."""
    if isinstance(rules, Composite):
        return rules
    if isinstance(rules, (list, tuple)):
        pairs = tuple(rules)
        if not all(isinstance(p, tuple) and len(p) == 2 for p in pairs):
            raise TypeError("rules as a sequence must hold (selector, rule) pairs, e.g. "
                            f"[('conv1', ZPlus())]; got {rules!r}")
        return Composite(layers=tuple((tuple(s) if isinstance(s, list) else s, r) for s, r in pairs))
    if isinstance(rules, type) or not hasattr(rules, "linear"):
        check_rule(rules)
        raise TypeError("rules must be an LRP rule (Epsilon(), ZPlus(), AlphaBeta(2, 1), ...), a "
                        f"Composite, or (selector, rule) pairs; got {rules!r}")
    return Composite(default=rules)

