"""What the traced model does that a method's numbers do not see, as warnings: a softmax
output, products of input-dependent values and raw nonlinearities that no rule takes apart,
piecewise-constant steps (a cast to int, floor, a binning) whose gradient is 0, no ReLU for
the rules that act at ReLUs only.

Each check reads the model's cached program (no extra trace per call) and is called by the
public method before it runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxplain.attribution._lrp_rules import MIXING
from jaxplain.core._backward import activation_places, unruled_products
from jaxplain.core._capture import program_of
from jaxplain.core._user_line import user_stacklevel
from jaxplain.core._outputs import output_activation
from jaxplain.core._program import gradient_gate
from jaxplain.core._sites import NORMALIZERS


def warn_if_softmax_output(f: Callable, x: jax.Array, method: str, consequence: str) -> None:
    """A ``UserWarning`` when `f`'s output is a softmax (or log-softmax) over the classes.

    Methods whose rules promise summation or conservation (DeepLIFT, LRP) cannot take a
    softmax apart (it mixes its inputs): `consequence` says what goes wrong instead. Called by
    the public function before tracing; the warning points at the caller's line.
    """
    op = output_activation(f, x)
    if op not in ("softmax", "log_softmax"):
        return
    warnings.warn(
        f"{method}: the model's output is a jax.nn.{op} over the classes, which {method}'s "
        f"rules cannot take apart (a {op} mixes its inputs), so {consequence}. Explain the "
        f"logits instead: pass the model without its final {op} (as Captum advises).",
        UserWarning, stacklevel=3)


def _listed(names: tuple, most: int) -> str:
    """The first `most` of `names`, quoted, then "..." if there are more."""
    return ", ".join(repr(n) for n in names[:most]) + (", ..." if len(names) > most else "")


def warn_if_products(f: Callable, x: jax.Array, rules: Any, method: str,
                     consequence: str) -> None:
    """A ``UserWarning`` when `f` multiplies two input-dependent values (an LSTM's or GRU's
    gates, attention) at places where `rules` pass the plain gradient, which hands the whole
    relevance to both factors: `consequence` says what then fails."""
    names = unruled_products(f, x, rules)
    if not names:
        return
    shown = _listed(names, 3)
    warnings.warn(
        f"{method}: the model multiplies two values that both depend on x ({shown}: gates or "
        f"attention), and {method}'s rules pass the plain gradient through such a product, "
        f"which gives its whole relevance to both factors, so {consequence}. For a gate (a "
        "squeeze-and-excitation block, an LSTM's gates) lrp takes rules=Composite(..., "
        "products=SignalTakeAll()), which gives the relevance to the signal. attn_lrp splits a "
        "product's relevance between its factors (the uniform rule), which conserves it through "
        "gates, but not through attention: its softmax rule passes back only part of the "
        "relevance (a median 52% of the logit missed on the attribution guide's ViT). "
        "conservative_propagation holds the attention weights constant and sums to the logit "
        "on an encoder without biases whose MLPs have ReLU (or no) activations.",
        UserWarning, stacklevel=3)


def warn_if_no_relu(f: Callable, x: jax.Array, rule: Any, method: str) -> None:
    """A ``UserWarning`` when `f` has no ReLU at which `rule` (guided backprop's, deconvnet's)
    is asked, so that `method` returns the plain gradient: it names the activations and the
    elementwise nonlinearities it found instead."""
    places = activation_places(f, x, rule)
    if any(op == "relu" for _, op in places):
        return
    ops, others = tuple(dict.fromkeys(op for _, op in places)), unruled_nonlinear(f, x)
    found = [f"the activations {_listed(ops, 4)}"] if ops else []
    found += [f"the elementwise nonlinearities {_listed(others, 4)}"] if others else []
    found = " and ".join(found) or "no activation"
    warnings.warn(
        f"{method}: the model has no ReLU ({found}), and {method} changes the backward pass "
        f"at ReLUs only, so it returns the plain gradient. A ReLU is recognised as "
        "jax.nn.relu, jnp.maximum(h, 0), jnp.clip(h, 0), jnp.where(h > 0, h, 0) or "
        "h * (h > 0); for other activations use gradient (the same numbers), or deeplift or "
        "lrp, whose rules take any jax.nn activation.",
        UserWarning, stacklevel=3)


# Elementwise primitives that are nonlinear in an input-dependent operand and that no rule sees
# (jax.nn's activations are one node each, rsqrt and sqrt are normalisers, products are warned
# about apart, steps such as floor are warned about apart, see `_STEPS`); div only by an
# input-dependent divisor, select_n only on an input-dependent predicate.
_NONLINEAR = frozenset({
    "integer_pow", "pow", "square", "exp", "exp2", "log", "log1p", "expm1", "sin", "cos", "tan",
    "asin", "acos", "atan", "atan2", "sinh", "cosh", "asinh", "acosh", "atanh", "cbrt", "abs",
    "erf", "erfc", "erf_inv", "lgamma", "digamma", "max", "min", "clamp", "rem", "div",
    "select_n", "sqrt", "rsqrt"})
# Steps from statistics (reductions) to a statistic: reshapes, shifts, scales, squares.
_STATISTIC_STEPS = frozenset({"add", "sub", "mul", "div", "max", "integer_pow", "square",
                              "select_n", "broadcast_in_dim", "reshape", "squeeze",
                              "expand_dims", "convert_element_type"})
# Ops that pass a value on unchanged (looked through to find a divisor's normaliser).
_RESHAPES = frozenset({"broadcast_in_dim", "reshape", "squeeze", "expand_dims",
                       "convert_element_type"})


def _reach(program: Any) -> set:
    """The ids that the outputs of `program` are computed from through no normaliser (the
    square root of a statistic, :func:`_statistic_roots`), no ``stop_gradient`` and no op with
    only boolean or integer results (a comparison making a mask: no gradient passes it), the
    outputs included."""
    reach = {r for r in program.output_ids if isinstance(r, int)}
    roots = _statistic_roots(program)
    for k in range(len(program.nodes) - 1, -1, -1):
        node = program.nodes[k]
        if (k not in roots and node.prim != "stop_gradient"
                and any(r in reach for r in node.outs)
                and any(jnp.issubdtype(program.avals[r].dtype, jnp.inexact) for r in node.outs)):
            reach.update(r for r in node.ins if isinstance(r, int))
    return reach


def _statistic_roots(program: Any) -> set[int]:
    """Indices of the ``sqrt``/``rsqrt`` nodes that take the root of a statistic: a reduction
    (a LayerNorm's variance, a norm's sum of squares), reshaped or shifted and scaled by
    constants (``+ eps``, ``/ n``) or combined with other statistics (Flax's fast variance
    ``max(mean(x²) - mean(x)², 0)``); a root of an elementwise value is a nonlinearity."""
    statistics: set[int] = set()
    for node in program.nodes:  # in order: operands first
        data = [v for v in node.ins if isinstance(v, int) and v in program.depends]
        if node.prim.startswith("reduce_") or (
                data and node.prim in _STATISTIC_STEPS and all(v in statistics for v in data)):
            statistics.update(node.outs)
    return {k for k, node in enumerate(program.nodes)
            if node.prim in NORMALIZERS and node.ins and node.ins[0] in statistics}


def unruled_nonlinear(f: Callable, x: jax.Array, *, routes: bool = True) -> tuple[str, ...]:
    """The elementwise nonlinearities of `f` (at `x`'s shape) that no rule sees: raw primitives
    such as ``x ** 2``, ``jnp.exp`` or ``jnp.sin`` applied to input-dependent values on a path to
    the output that passes no normaliser and no ``stop_gradient`` (a LayerNorm's variance is
    left out), as ``scope/primitive`` names. Arithmetic on integers (an index clamped by
    ``jnp.take``) is left out: the step that made the integers is :func:`steps`', and so is a
    vmapped ``lax.cond``'s gradient gate ``select_n(p, stop_gradient(v), v)`` (its value is
    ``v``). With ``routes=False`` every ``jnp.where(p, a, b)`` is left out too: its gradient
    hands each output's relevance whole to the chosen value, and a constant chosen absorbs it
    as a bias does (LRP), though the choice differs between x and a baseline (DeepLIFT)."""
    program, site_map = program_of(f, x, unrolled=True, warn=False)
    reach = _reach(program)
    producer = {r: node for node in program.nodes for r in node.outs}
    roots = {r for k in _statistic_roots(program) for r in program.nodes[k].outs}
    gated = {node.outs[0]: node.ins[0] for node in program.nodes if node.prim == "stop_gradient"}

    def dependent(r):
        return isinstance(r, int) and r in program.depends

    def normalised(r):  # a value computed by a normaliser, reshaped
        while r in producer and producer[r].prim in _RESHAPES:
            r = producer[r].ins[0]
        return r in roots

    names = []
    for i, node in enumerate(program.nodes):
        if (node.prim not in _NONLINEAR or node.activation is not None or not node.outs
                or node.outs[0] not in reach or i in site_map.pools or i in site_map.groups
                or not jnp.issubdtype(program.avals[node.outs[0]].dtype, jnp.inexact)):
            continue
        if node.prim in NORMALIZERS:
            hit = dependent(node.ins[0]) and node.outs[0] not in roots
        elif node.prim == "div":
            hit = dependent(node.ins[1]) and not normalised(node.ins[1])
        elif node.prim == "select_n":
            hit = routes and dependent(node.ins[0]) and not gradient_gate(node, gated)
        else:
            hit = any(dependent(r) for r in node.ins)
        if hit:
            names.append("/".join(node.stack + (node.prim,)))
    return tuple(dict.fromkeys(names))


# Primitives that mix several input-dependent values nonlinearly and that no rule sees (a max or
# min reduction only where it is no pool or extremum, see jaxplain.core._sites.pool_op: a
# statistic; products are warned about apart); jax.nn's MIXING activations (softmax,
# log_softmax) are found by name.
_MIXING_PRIMS = frozenset({"sort", "top_k", "cummax", "cummin", "cumlogsumexp", "cumprod",
                           "reduce_prod", "reduce_window_min", "reduce_window", "reduce_max",
                           "reduce_min"})
# Ops between a final softmax and the output (see jaxplain.core._outputs.output_activation).
_TO_OUTPUT = _RESHAPES | {"copy", "copy_p", "reduce_precision", "log"}


def _output_softmax(program: Any) -> Any:
    """The node of a MIXING activation that the single output comes straight out of (through
    casts, reshapes and a log), or None: that one has a warning of its own
    (:func:`warn_if_softmax_output`)."""
    if len(program.output_ids) != 1:
        return None
    producer = {r: node for node in program.nodes for r in node.outs}
    node = producer.get(program.output_ids[0])
    while node is not None and node.activation is None and node.prim in _TO_OUTPUT:
        node = producer.get(node.ins[0])
    return node if node is not None and node.activation in MIXING else None


def unruled_mixing(f: Callable, x: jax.Array) -> tuple[str, ...]:
    """The nonlinearities of `f` (at `x`'s shape) that mix several values and that no rule
    takes apart: a ``jax.nn.softmax`` or ``log_softmax`` inside the model (not the one the
    output comes straight out of), ``jnp.sort``, ``lax.top_k``, a cumulative max, a product
    reduction, a min pool written with ``lax.reduce_window``; applied to input-dependent values
    with a floating result on a path to the output that passes no normaliser and no
    ``stop_gradient``, as ``scope/op`` names. So is a max or min over several values that is no
    pool (:func:`jaxplain.core._sites.pool_op`): a shift ``z - z.max(-1)`` written out."""
    program, site_map = program_of(f, x, unrolled=True, warn=False)
    reach, last = _reach(program), _output_softmax(program)
    names = []
    for i, node in enumerate(program.nodes):
        op = node.activation if node.activation in MIXING else node.prim
        if (op not in MIXING and op not in _MIXING_PRIMS or node is last or i in site_map.pools
                or not any(isinstance(r, int) and r in program.depends for r in node.ins)
                or op in ("reduce_max", "reduce_min") and node.eqn.outvars[0].aval.size
                == node.eqn.invars[0].aval.size):  # over one value: the identity
            continue
        if any(r in reach and jnp.issubdtype(program.avals[r].dtype, jnp.inexact)
               for r in node.outs):
            names.append("/".join(node.stack + (op,)))
    return tuple(dict.fromkeys(names))


def warn_if_unruled_nonlinear(f: Callable, x: jax.Array, method: str, consequence: str) -> None:
    """A ``UserWarning`` when `f` applies elementwise nonlinearities that no rule sees
    (:func:`unruled_nonlinear`), where `method`'s rules pass the plain gradient, so that
    `consequence` (its summation fails there), and another when it applies ones that mix
    values (:func:`unruled_mixing`); and, first, the warning of :func:`warn_if_steps`, whose
    plain gradient is 0."""
    warn_if_steps(f, x, method)
    names = unruled_nonlinear(f, x)
    if names:
        warnings.warn(
            f"{method}: the model applies elementwise nonlinearities that are none of the "
            f"activations jaxplain has rules for ({_listed(names, 4)}) to values that depend "
            f"on x; {method}'s rescale "
            f"rule does not see them and passes their plain gradient, so summation-to-delta "
            f"fails there and {consequence}. Write the nonlinearity as a jax.nn function where "
            "it is one (jax.nn.hard_tanh for jnp.clip(h, -1, 1), jax.nn.softplus, ...), or use "
            "integrated_gradients, whose sum tends to f(x)_t - f(b)_t as its steps grow.",
            UserWarning, stacklevel=3)
    _warn_mixing(f, x, method, consequence)


def _warn_mixing(f: Callable, x: jax.Array, method: str, consequence: str) -> None:
    """:func:`warn_if_unruled_nonlinear`'s warning for :func:`unruled_mixing`."""
    names = unruled_mixing(f, x)
    if not names:
        return
    warnings.warn(
        f"{method}: the model applies nonlinearities that mix several values "
        f"({_listed(names, 4)}: a softmax inside the model, a sort, a product over an axis) to "
        f"values that depend on x; {method}'s rules take apart elementwise activations, maxima "
        f"and minima only, and pass these ops' plain gradient, so summation-to-delta fails "
        f"there and {consequence}. Use integrated_gradients, whose sum tends to "
        "f(x)_t - f(b)_t as its steps grow, or a perturbation method (shapley_sampling, "
        "kernel_shap).",
        UserWarning, stacklevel=4)


# Steps: primitives whose derivative is 0 wherever it is defined. A comparison is one only where
# it picks an index (a value bin looked up in a table); elsewhere it picks between values that
# carry the gradient (jnp.where(h > 0, h, 0), h * (h > 0)).
_STEPS = frozenset({"floor", "ceil", "round", "sign"})
_COMPARISONS = frozenset({"lt", "le", "gt", "ge", "eq", "ne"})
# Index operands, by position, of the primitives that read or write at an index.
_INDEXED = {"gather": slice(1, 2), "dynamic_slice": slice(1, None),
            "dynamic_update_slice": slice(2, None), "scatter": slice(1, 2),
            "scatter-add": slice(1, 2), "scatter_add": slice(1, 2)}
# program -> its steps; weak, as the program caches
_STEPS_FOUND: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
# the model whose steps the running method has reported (a method run inside smoothgrad)
_REPORTED: contextvars.ContextVar = contextvars.ContextVar("jaxplain_reported_steps",
                                                           default=None)


def _upstream(program: Any, roots: set) -> set:
    """The ids that `roots` are computed from (`roots` included), through any node but a
    ``stop_gradient``."""
    found = set(roots)
    for node in reversed(program.nodes):
        if node.prim != "stop_gradient" and any(r in found for r in node.outs):
            found.update(r for r in node.ins if isinstance(r, int))
    return found


def _find_steps(program: Any) -> tuple[str, ...]:
    reach = _upstream(program, {r for r in program.output_ids if isinstance(r, int)})
    indices = _upstream(program, {
        r for node in program.nodes if node.prim in _INDEXED and node.outs[0] in reach
        for r in node.ins[_INDEXED[node.prim]] if isinstance(r, int)})

    def floating(r):  # an input-dependent float (not one behind a stop_gradient)
        return (isinstance(r, int) and r in program.depends and r not in program.stopped
                and jnp.issubdtype(program.avals[r].dtype, jnp.inexact))

    names = []
    for node in program.nodes:
        if not node.outs or not any(floating(r) for r in node.ins):
            continue
        out = program.avals[node.outs[0]].dtype
        if node.prim == "convert_element_type" and not jnp.issubdtype(out, jnp.inexact):
            op = f"convert_element_type({out})"
        elif node.prim in _STEPS or (node.prim in _COMPARISONS and node.outs[0] in indices):
            op = node.prim
        else:
            continue
        if node.outs[0] in reach:
            names.append("/".join(node.stack + (op,)))
    return tuple(dict.fromkeys(names))


def steps(f: Callable, x: jax.Array) -> tuple[str, ...]:
    """The piecewise-constant steps of `f` (at `x`'s shape) on input-dependent floats whose
    result reaches the output (not through a ``stop_gradient``): casts to an integer or bool
    dtype, ``floor``, ``ceil``, ``round``, ``sign``, and comparisons that pick an index, as
    ``scope/primitive`` names. Their gradient is 0, so a gradient method gives nothing to what
    reaches the output only through them. Found once per traced program."""
    program = program_of(f, x, unrolled=True, warn=False)[0]
    found = _STEPS_FOUND.get(program)
    if found is None:
        found = _STEPS_FOUND[program] = _find_steps(program)
    return found


def warn_if_steps(f: Callable, x: jax.Array, method: str) -> None:
    """A ``UserWarning`` when `f` has :func:`steps`, which `method`, a gradient method, reads
    as flat: once per call, and not again from a method run inside the caller (see
    :func:`steps_reported`)."""
    if _REPORTED.get() is f:
        return
    names = steps(f, x)
    if not names:
        return
    warnings.warn(
        f"{method}: the model's output depends on x through piecewise-constant steps "
        f"({_listed(names, 3)}: a cast to an integer or bool dtype, floor, ceil, round, sign, "
        f"or a comparison that picks an index), whose gradient is 0, so {method} gives 0 to "
        "what reaches the output only through them: a category id stored as a float and cast "
        "to int for an embedding gets no attribution, and sums such as integrated gradients' "
        "completeness miss its share. Explain such inputs with a perturbation method "
        "(feature_ablation, shapley_sampling, kernel_shap, lime: they take the integer codes "
        "themselves as x), or attribute at the embedding's site with "
        "layer_integrated_gradients(f, x, target, site=...).",
        UserWarning, stacklevel=user_stacklevel())


@contextlib.contextmanager
def steps_reported(f: Callable):
    """Within the block, :func:`warn_if_steps` is silent for `f`: a method that reported them
    (smoothgrad) runs another method (gradient) that would report them again."""
    token = _REPORTED.set(f)
    try:
        yield
    finally:
        _REPORTED.reset(token)
