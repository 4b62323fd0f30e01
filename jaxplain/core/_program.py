"""A traced model as a flat program: nested jits inlined, name stacks made absolute.

`trace(f, spec)` turns `f` into a :class:`Program`, a list of :class:`Node` equations over integer
value ids. Calls (nested `jit`, `jax.checkpoint` / `nn.remat`) are inlined; control flow and
functions with a custom derivative stay one node each, and the scopes inside them are recorded
so that asking for a site there gets a clear refusal. A program with loops also carries
``unrolled``: the same program with each `scan` (a Flax `nn.scan` over layers, a `fori_loop` with
static bounds) of at most :data:`UNROLL_BUDGET` equations in all written out, one numbered scope
per iteration (``blocks/0/dense``); the verbs run it only where they need a site inside a loop,
since it compiles more slowly. The kernel verbs (capture, intervene, rewrite_backward) re-run
that program with the primitives' own `bind`, so the result is a pure function that jit, vmap,
grad and jvp see as ordinary JAX code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from jaxplain.core import _written_out
from jaxplain.core._changed_weights import check_weights, is_deleted
from jaxplain.core._reinterpret import bind

# Call primitives whose body is inlined (their semantics are "run this jaxpr"; a checkpoint's
# rematerialisation policy is dropped: values and gradients are unchanged, memory is not saved).
_INLINE = frozenset({"jit", "pjit", "closed_call", "core_call", "remat2", "checkpoint"})
# Kept as one node: control flow, and custom derivatives (whose rule must stay in charge). Sites
# inside them are refused with a clear error.
_OPAQUE = frozenset({"scan", "while", "cond", "custom_jvp_call", "custom_vjp_call"})
# A scan is unrolled when its iterations hold at most this many equations in all (so a deep
# scan over layers is, a long recurrence over time steps is not: it would compile for minutes).
UNROLL_BUDGET = 20_000
# The scope of an unrolled scan's iterations when its body has no scope of its own.
_LOOP_SCOPE = "scan"
# `jax.nn` activations that stay one node when they appear as a named jit.
_ACTIVATION_JITS = frozenset({
    "relu", "relu6", "sigmoid", "silu", "swish", "softplus", "elu", "celu", "selu",
    "leaky_relu", "hard_tanh", "gelu", "mish", "log_sigmoid", "tanh", "hard_sigmoid",
    "hard_silu", "soft_sign", "squareplus", "sparse_plus", "softmax", "log_softmax",
})
_ACTIVATION_PRIMS = {"tanh": "tanh", "logistic": "sigmoid"}
# JAX writes a transformation around the scope that follows it: "vmap(blocks/0)/lin".
_TRANSFORM_MARK = re.compile(r"\w+\(([^()]*)\)")
# Scope suffix under which `intervene` computes a site's new value, so that a later trace of the
# edited function still finds the site (and sees the edited value).
EDIT_MARK = "@edit"
# The scope part below an edit's that records the layout of the value it replaces (see
# `edit_scope`), which a new value independent of x (``jnp.zeros_like``) does not carry.
_LAYOUT_MARK = "@layout:"


@dataclasses.dataclass(frozen=True, eq=False)
class Lit:
    """A literal operand of an equation; compared and hashed by identity (its value may be an
    unhashable array), so that ``ref in ids`` is False for a literal, never an error."""

    value: Any


@dataclasses.dataclass(frozen=True, eq=False)
class Node:
    """One equation: `outs = prim.bind(*ins, **params)` with absolute name stack `stack`."""

    eqn: Any
    ins: tuple  # of int ids or Lit
    outs: tuple  # of int ids
    stack: tuple[str, ...]
    activation: str | None  # "relu", "tanh", ... when the node is an activation
    # Inside an unrolled loop step: (loop, at, position) -- the loop (one id per unrolled scan),
    # the index in `stack` of the step's number, and the node's position among the nodes of one
    # step, the same in every step (so derived names can be numbered alike in all of them).
    step: tuple | None = None

    @property
    def prim(self) -> str:
        return self.eqn.primitive.name

    def bind(self, *args):
        """Apply the equation to `args` under its name stack (so re-traces keep the names)."""
        with contextlib.ExitStack() as stack:
            if self.stack:
                stack.enter_context(jax.named_scope("/".join(self.stack)))
            manager = getattr(getattr(self.eqn, "ctx", None), "manager", None)
            if manager is not None:
                stack.enter_context(manager)
            return bind(self.eqn, args)



@dataclasses.dataclass(frozen=True, eq=False)
class Program:
    """`f` traced at one input shape: nodes in order, constants, input and output ids."""

    nodes: tuple[Node, ...]
    consts: dict  # id -> value
    input_id: int
    output_ids: tuple  # of int ids or Lit
    out_tree: Any
    avals: dict  # id -> ShapedArray
    opaque_scopes: dict  # scope name inside an opaque node (see _OPAQUE) -> its primitive name
    depends: frozenset  # ids that depend on the input
    unrolled: "Program | None" = None  # the program with its scans unrolled, when it has any
    # the step scopes of unrolled loops whose body has no scope of its own (``scan/0``): a list
    # of iterations, not a module the model names
    loop_scopes: frozenset = frozenset()
    # value id of an intervention's result -> (channel axis, batch axis) of the value it
    # replaces, as `edit_scope` recorded them (the axis analyses take these over)
    edits: dict = dataclasses.field(default_factory=dict)
    # ids in `depends` that depend on the input only through a ``stop_gradient`` (the branch of
    # a straight-through estimator ``h + stop_gradient(q(h) - h)``): constants to the gradient,
    # so no rule place treats them as an input-dependent operand
    stopped: frozenset = frozenset()


def _clean_stack(name_stack) -> tuple[str, ...]:
    """The scope names of a name stack: transformation marks unwrapped, and library names
    dropped: class names (``eqx.nn.Linear``, with a dot) and ``jnp.einsum`` specs
    (``btk,tkd->btd``)."""
    text, previous = str(name_stack), None
    while text != previous:  # nested marks: "jvp(vmap(blocks/0))"
        previous, text = text, _TRANSFORM_MARK.sub(r"\1", text)
    return tuple(part for part in text.split("/") if part and "." not in part and "->" not in part)


def _activation_of(eqn) -> str | None:
    """The activation that `eqn` computes (``"relu"``, ``"tanh"``, ...), or None."""
    name = eqn.primitive.name
    if name in _ACTIVATION_PRIMS:
        return _ACTIVATION_PRIMS[name]
    if name in _INLINE:
        return _named_activation(eqn)
    if name in _CUSTOM:
        return _custom_activation(eqn)
    if name == "max" and _relu_body_eqn(eqn):
        return "relu"
    return None


_CUSTOM = frozenset({"custom_jvp_call", "custom_vjp_call"})
# The comparisons of a where-ReLU's mask, and the sign of their left operand where they hold.
_COMPARES = {"gt": 1, "ge": 1, "lt": -1, "le": -1}
# One activation's body is a few equations (GELU's or logaddexp's ten); a longer
# custom-derivative body is not looked into.
_ACTIVATION_EQNS = 24
# Static options of the `jax.nn` activations that are jits in some JAX versions: each variant is
# tried in turn; a softmax's ``axis`` may be any axis of the input.
_VARIANTS = {"gelu": ({}, {"approximate": False})}
_AXIS_OPTION = frozenset({"softmax", "log_softmax"})


def _named_activation(eqn) -> str | None:
    """The name of the jit `eqn` when it is a ``jax.nn`` activation of that name: its body is
    that function's trace at the jit's operands (a helper ``gelu(h, w)`` that also applies a
    layer, or a leaky ReLU named ``relu``, is not)."""
    name = eqn.params.get("name")
    if name not in _ACTIVATION_JITS or len(eqn.outvars) != 1 or not eqn.invars:
        return None
    avals = tuple(_aval_key(v.aval) for v in eqn.invars)
    variants = list(_VARIANTS.get(name, ({},)))
    if name in _AXIS_OPTION:
        variants += [{"axis": a} for a in range(len(avals[0][0]))]
    body = _body(eqn)[0]
    for variant in variants:
        reference = _reference_body(name, avals, tuple(sorted(variant.items())))
        if reference is not None and _same_wrapped(body, reference):
            return name
    return None


def _aval_key(aval) -> tuple:
    return tuple(aval.shape), np.dtype(aval.dtype), bool(getattr(aval, "weak_type", False))


@functools.lru_cache(maxsize=256)
def _reference_body(name: str, avals: tuple, options: tuple):
    """The jaxpr of ``jax.nn.<name>(*operands, **options)`` at `avals` (``(shape, dtype,
    weak_type)`` per operand), or None when it does not trace there."""
    specs = [jax.ShapeDtypeStruct(shape, dtype, weak_type=weak) for shape, dtype, weak in avals]
    try:
        fn = functools.partial(getattr(jax.nn, name), **dict(options))
        return jax.make_jaxpr(fn)(*specs).jaxpr
    except Exception:  # noqa: BLE001 -- another signature: no such activation
        return None


def _same_wrapped(body, reference) -> bool:
    """True when `body` is the jaxpr `reference`, or the body of the one call (a jit, a custom
    derivative) that `reference` is (``jax.nn.relu`` is a custom_jvp around a jit)."""
    while not _same_jaxpr(body, reference):
        (eqn, *rest) = reference.eqns or (None,)
        if rest or eqn is None or eqn.primitive.name not in _INLINE | _CUSTOM:
            return False
        if (list(eqn.invars) != list(reference.invars)
                or list(eqn.outvars) != list(reference.outvars)):
            return False
        inner = eqn.params["call_jaxpr" if eqn.primitive.name in _CUSTOM else "jaxpr"]
        reference = getattr(inner, "jaxpr", inner)
    return True


def _same_jaxpr(a, b) -> bool:
    """True when the jaxprs `a` and `b` apply the same primitives with the same parameters
    (sub-jaxprs compared alike, functions by type) to the same literals and values."""
    if len(a.invars) != len(b.invars) or len(a.eqns) != len(b.eqns):
        return False
    mapping = dict(zip(a.invars, b.invars))
    mapping.update(zip(a.constvars, b.constvars))
    for x, y in zip(a.eqns, b.eqns):
        if (x.primitive is not y.primitive or len(x.invars) != len(y.invars)
                or x.params.keys() != y.params.keys()
                or not all(_same_param(x.params[k], y.params[k]) for k in x.params)
                or not all(_same_operand(u, v, mapping) for u, v in zip(x.invars, y.invars))):
            return False
        mapping.update(zip(x.outvars, y.outvars))
    return len(a.outvars) == len(b.outvars) and all(
        _same_operand(u, v, mapping) for u, v in zip(a.outvars, b.outvars))


def _same_operand(u, v, mapping: dict) -> bool:
    literal = jax.extend.core.Literal
    if isinstance(u, literal) or isinstance(v, literal):
        return (isinstance(u, literal) and isinstance(v, literal)
                and np.shape(u.val) == np.shape(v.val) and bool(np.all(u.val == v.val)))
    return mapping.get(u) is v


def _same_param(a, b) -> bool:
    if isinstance(a, jax.extend.core.ClosedJaxpr) and isinstance(b, jax.extend.core.ClosedJaxpr):
        return len(a.consts) == len(b.consts) and _same_jaxpr(a.jaxpr, b.jaxpr)
    if isinstance(a, jax.extend.core.Jaxpr) and isinstance(b, jax.extend.core.Jaxpr):
        return _same_jaxpr(a, b)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same_param(x, y) for x, y in zip(a, b))
    if callable(a) or hasattr(a, "call_wrapped"):  # a custom rule, traced anew each time
        return type(a) is type(b)
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 -- an array-valued parameter
        return a is b


def _custom_activation(eqn) -> str | None:
    """The activation that the custom-derivative call `eqn` computes from its one non-literal
    operand: the body applies one activation to it (``jax.nn.relu``, a user's ``custom_jvp``
    of ``jnp.tanh``, a ReLU in any spelling, with a straight-through backward pass too), or is
    ``jnp.logaddexp(z, 0)`` (a ``softplus``). None otherwise."""
    closed = eqn.params["call_jaxpr"]
    jaxpr = closed.jaxpr
    arrays = [k for k, v in enumerate(eqn.invars) if not isinstance(v, jax.extend.core.Literal)]
    if len(arrays) != 1 or len(jaxpr.outvars) != 1 or _size(jaxpr) > _ACTIVATION_EQNS:
        return None
    if _is_softplus(eqn, arrays[0]):
        return "softplus"
    if (len(jaxpr.eqns) == 1 and list(jaxpr.eqns[0].invars) == list(jaxpr.invars)
            and list(jaxpr.eqns[0].outvars) == list(jaxpr.outvars) and len(jaxpr.invars) == 1):
        return _activation_of(jaxpr.eqns[0])  # the common case: one call, ``jax.nn.relu``'s
    builder = _Builder(unroll=False)
    ins = [Lit(v.val) if isinstance(v, jax.extend.core.Literal) else builder.fresh(v.aval)
           for v in eqn.invars]
    x = ins[arrays[0]]
    out = builder.inline(jaxpr, closed.consts, ins, ())[0]
    nodes = _fold_rectifiers(builder.nodes, x, [out], builder.avals)
    live = _depends(nodes, x, ())
    on = [node for node in nodes if any(isinstance(r, int) and r in live for r in node.ins)]
    if len(on) == 1 and on[0].activation is not None and on[0].outs == (out,):
        return on[0].activation
    return None


def _is_softplus(eqn, position: int) -> bool:
    """True when the call `eqn` is ``jnp.logaddexp(z, 0)`` (or ``(0, z)``) of its operand at
    `position`: its equation is that of the trace of ``jnp.logaddexp`` at the same operands."""
    if len(eqn.invars) != 2:
        return False
    zero = eqn.invars[1 - position]
    if np.ndim(zero.val) != 0 or float(zero.val) != 0.0:
        return False
    reference = _logaddexp_reference(_aval_key(eqn.invars[position].aval), position,
                                     _aval_key(zero.aval))
    return _same_param(reference, eqn.params["call_jaxpr"])


@functools.lru_cache(maxsize=64)
def _logaddexp_reference(aval: tuple, position: int, zero: tuple):
    """The body of ``jnp.logaddexp`` traced with the operand `aval` at `position` and a zero of
    the aval `zero`."""
    specs = [jax.ShapeDtypeStruct(shape, dtype, weak_type=weak)
             for shape, dtype, weak in (aval, zero)]
    eqns = jax.make_jaxpr(jnp.logaddexp)(*(specs[::-1] if position else specs)).eqns
    return next(e for e in eqns if e.primitive.name == "custom_jvp_call").params["call_jaxpr"]


def _literal_chain(nodes, ref, producer, value: float = 0.0) -> list[int] | None:
    """The nodes that broadcast or cast a scalar literal `value` into `ref` (``[]`` for the
    literal itself; ``jnp.clip(h, 0)`` casts its bound inside its jit), or None when `ref` is
    no such constant."""
    if isinstance(ref, Lit):
        return [] if np.ndim(ref.value) == 0 and float(ref.value) == value else None
    k = producer.get(ref)
    node = None if k is None else nodes[k]
    if node is None or node.prim not in ("broadcast_in_dim", "convert_element_type") or len(node.ins) != 1:
        return None
    inner = _literal_chain(nodes, node.ins[0], producer, value)
    return None if inner is None else inner + [k]


def _elementwise_of(node: Node, z, avals: dict) -> bool:
    """True when `node`'s output is a float shaped like the value `z` (an activation of it)."""
    out = node.eqn.outvars[0].aval
    return (isinstance(z, int) and jnp.issubdtype(out.dtype, jnp.floating)
            and tuple(out.shape) == tuple(avals[z].shape))


def _max_rectifier(nodes, k: int, producer: dict, avals: dict) -> tuple | None:
    """``("relu", z, helpers)`` when node `k` is ``max(z, 0)`` with a zero cast or broadcast
    from a literal (``jnp.clip(z, 0)``, ``jnp.maximum(z, jnp.zeros_like(z))``; a bare literal
    makes the max a ``relu`` already, see :func:`_activation_of`); the helpers are the zero's
    casts and broadcasts."""
    node = nodes[k]
    if node.prim != "max" or node.activation is not None or len(node.ins) != 2:
        return None
    for z, zero in (node.ins, node.ins[::-1]):
        chain = _literal_chain(nodes, zero, producer)
        if chain and _literal_chain(nodes, z, producer) is None and _elementwise_of(node, z, avals):
            return "relu", z, tuple(chain)
    return None


def _masked_rectifier(nodes, k: int, producer: dict, avals: dict) -> tuple | None:
    """``("relu", z, helpers)`` when node `k` is ``z * (z > 0)``, the mask cast to floats
    (``>=``, and ``0 < z``, ``0 <= z`` alike); the helpers are the comparison, the cast and the
    zero's."""
    node = nodes[k]
    if node.prim != "mul" or len(node.ins) != 2:
        return None
    for z, mask in (node.ins, node.ins[::-1]):
        c = producer.get(mask) if isinstance(mask, int) else None
        if c is None or nodes[c].prim != "convert_element_type" or not _elementwise_of(node, z, avals):
            continue
        cast = nodes[c].ins[0]
        compare = nodes[producer[cast]] if isinstance(cast, int) and cast in producer else None
        if compare is None or compare.prim not in _COMPARES or len(compare.ins) != 2:
            continue
        a, b = compare.ins if _COMPARES[compare.prim] > 0 else compare.ins[::-1]
        zeros = _literal_chain(nodes, b, producer)
        if a == z and zeros is not None:
            return "relu", z, tuple(sorted([producer[cast], c, *zeros]))
    return None


def _clipped_rectifier(nodes, k: int, producer: dict, avals: dict,
                       live: frozenset) -> tuple | None:
    """``("relu6", z, helpers)`` when node `k` is ``min(relu(z), 6)`` for a ReLU in any spelling
    (:func:`_rectified`): ``jnp.clip(z, 0, 6)``, ``jnp.minimum(jnp.maximum(z, 0), 6)``,
    ``jnp.minimum(jax.nn.relu(z), 6)`` (a Keras port's), ``jnp.clip(jax.nn.relu(z), 0, 6)``,
    either operand order, the bound a literal, cast or broadcast; the helpers are the ReLU's
    nodes and the bound's."""
    node = nodes[k]
    if node.prim != "min" or len(node.ins) != 2:
        return None
    for clipped, six in (node.ins, node.ins[::-1]):
        chain = _literal_chain(nodes, six, producer, 6.0)
        found = None if chain is None else _rectified(nodes, clipped, producer, avals, live)
        if found is not None and _elementwise_of(node, found[0], avals):
            return "relu6", found[0], tuple(sorted([*found[1], *chain]))
    return None


def _rectified(nodes, ref, producer: dict, avals: dict, live: frozenset) -> tuple | None:
    """``(z, helpers)`` when the value `ref` is ``relu(z)``: the output of a ``relu``
    activation node (``jax.nn.relu``, ``max(z, 0)``) or of a ReLU spelled out (see
    :func:`_spelled_rectifier`), a ReLU of a ReLU taken as one; the helpers are the nodes from
    `z` to `ref`. None otherwise."""
    m = producer.get(ref) if isinstance(ref, int) else None
    if m is None:
        return None
    node = nodes[m]
    arrays = [r for r in node.ins if not isinstance(r, Lit)]
    if node.activation == "relu" and len(arrays) == 1:
        z, helpers = arrays[0], (m,)
    elif (found := (_where_rectifier(nodes, m, producer, avals, live)
                    or _max_rectifier(nodes, m, producer, avals)
                    or _masked_rectifier(nodes, m, producer, avals))) and found[0] == "relu":
        z, helpers = found[1], (*found[2], m)
    else:
        return None
    inner = _rectified(nodes, z, producer, avals, live)
    return (z, helpers) if inner is None else (inner[0], (*inner[1], *helpers))


def _spelled_rectifier(nodes, k: int, producer: dict, avals: dict,
                       live: frozenset) -> tuple | None:
    """``(name, z, helper nodes)`` when node `k` ends a ReLU (``"relu"``, ``"leaky_relu"``,
    ``"relu6"``) spelled with other primitives than a ``jax.nn`` call or a ``max`` with a
    literal 0: a select (:func:`_where_rectifier`; `live`: the input-dependent ids), a max
    with a cast zero
    (:func:`_max_rectifier`), a masked product (:func:`_masked_rectifier`), a clip to
    ``[0, 6]`` (:func:`_clipped_rectifier`). None otherwise."""
    return (_where_rectifier(nodes, k, producer, avals, live)
            or _max_rectifier(nodes, k, producer, avals)
            or _masked_rectifier(nodes, k, producer, avals)
            or _clipped_rectifier(nodes, k, producer, avals, live))


def _where_rectifier(nodes, k: int, producer: dict, avals: dict,
                     live: frozenset) -> tuple | None:
    """``(name, z, helper nodes)`` when node `k` is a ReLU written with a select:
    ``jnp.where(z > 0, z, 0)`` (``"relu"``) or ``jnp.where(z > 0, z, a * z)`` for a slope `a`
    that is a literal or a value not computed from the input (`live`: the ids that are), one
    number or one per unit (``"leaky_relu"``: Equinox's ``PReLU``), ``>=``, ``<`` and ``<=``
    alike; the helpers are the comparison, the slope's product and the zero's broadcasts, in
    program order. None otherwise."""
    node = nodes[k]
    if node.prim != "select_n" or len(node.ins) != 3 or producer.get(node.ins[0]) is None:
        return None
    c = producer[node.ins[0]]
    compare = nodes[c]
    if compare.prim not in _COMPARES or len(compare.ins) != 2:
        return None
    a, b = compare.ins
    if _literal_chain(nodes, b, producer) == []:
        z, sign = a, _COMPARES[compare.prim]
    elif _literal_chain(nodes, a, producer) == []:
        z, sign = b, -_COMPARES[compare.prim]
    else:
        return None
    if isinstance(z, Lit) or not jnp.issubdtype(nodes[k].eqn.outvars[0].aval.dtype, jnp.floating):
        return None
    negative, positive = node.ins[1:] if sign > 0 else node.ins[:0:-1]
    if positive != z:
        return None
    zeros = _literal_chain(nodes, negative, producer)
    if zeros is not None:
        return "relu", z, tuple(sorted([c, *zeros]))
    m = producer.get(negative)
    slope = None if m is None else nodes[m]
    if slope is None or slope.prim != "mul" or len(slope.ins) != 2 or z not in slope.ins:
        return None
    a = slope.ins[1] if slope.ins[0] == z else slope.ins[0]
    fixed = np.ndim(a.value) == 0 if isinstance(a, Lit) else (
        a not in live and _elementwise_of(slope, z, avals))
    return ("leaky_relu", z, tuple(sorted([c, m]))) if fixed else None


def _rectifier_template(name: str, z: int, helpers: list, avals: dict) -> tuple:
    """``(eqn, params)``: one ``jit`` equation named `name` that computes what the nodes
    `helpers` (ending with the select) compute from the value `z` and the values `params` that
    they read besides (a PReLU's slope), with the same primitives; its operands are
    ``(z, *params)``, as ``jax.nn.leaky_relu``'s with an array slope."""
    made = {r for node in helpers for r in node.outs}
    params = tuple(dict.fromkeys(r for node in helpers for r in node.ins
                                 if isinstance(r, int) and r != z and r not in made))

    def rectifier(value, *values):
        env = {z: value, **dict(zip(params, values))}
        for node in helpers:
            outs = bind(node.eqn, [r.value if isinstance(r, Lit) else env[r] for r in node.ins])
            env.update(zip(node.outs, outs))
        return env[helpers[-1].outs[0]]

    rectifier.__name__ = name
    specs = [jax.ShapeDtypeStruct(avals[r].shape, avals[r].dtype,
                                  weak_type=getattr(avals[r], "weak_type", False))
             for r in (z, *params)]
    return jax.make_jaxpr(jax.jit(rectifier))(*specs).jaxpr.eqns[0], params


def _fold_rectifiers(nodes: list, input_id: int, output_ids, avals: dict) -> list:
    """`nodes` with each spelled-out ReLU (:func:`_spelled_rectifier`) made one activation node
    of its `z`, as ``jax.nn.relu`` / ``leaky_relu`` / ``relu6`` are, and its helpers that
    nothing else uses dropped."""
    producer = {r: k for k, node in enumerate(nodes) for r in node.outs}
    live = _depends(nodes, input_id, ())
    found = {k: m for k in range(len(nodes))
             if (m := _spelled_rectifier(nodes, k, producer, avals, live))}
    if not found:
        return nodes
    folded = list(nodes)
    for k, (name, z, helpers) in found.items():
        steps = [nodes[j] for j in helpers] + [nodes[k]]
        template, params = _rectifier_template(name, z, steps, avals)
        folded[k] = dataclasses.replace(nodes[k], eqn=template, ins=(z, *params), activation=name)
    uses = Counter(r for node in folded for r in node.ins if isinstance(r, int))
    uses.update(r for r in output_ids if isinstance(r, int))
    dropped = set()
    for j in sorted({j for _, _, helpers in found.values() for j in helpers}, reverse=True):
        if not any(uses[r] for r in folded[j].outs):
            dropped.add(j)
            uses.subtract(r for r in folded[j].ins if isinstance(r, int))
    return [node for j, node in enumerate(folded) if j not in dropped]


def _relu_body_eqn(eqn) -> bool:
    lits = [v for v in eqn.invars if isinstance(v, jax.extend.core.Literal)]
    return len(lits) == 1 and np.ndim(lits[0].val) == 0 and float(lits[0].val) == 0.0


def _body(eqn) -> tuple:
    """(jaxpr, consts) of an inlined call (a jit's ClosedJaxpr, or a checkpoint's open Jaxpr)."""
    body = eqn.params["jaxpr"]
    if isinstance(body, jax.extend.core.ClosedJaxpr):
        return body.jaxpr, body.consts
    return body, ()


def _sub_jaxprs(params):
    for value in params.values():
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            if isinstance(v, jax.extend.core.ClosedJaxpr):
                yield v.jaxpr
            elif isinstance(v, jax.extend.core.Jaxpr):
                yield v


def _size(jaxpr) -> int:
    """Equations of `jaxpr` once its calls are inlined and its scans unrolled."""
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in _INLINE:
            total += _size(_body(eqn)[0])
        elif name == "scan":
            total += eqn.params["length"] * _size(eqn.params["jaxpr"].jaxpr)
        else:
            total += 1
    return total


def _unrollable(eqn) -> bool:
    length = eqn.params["length"]
    return 0 < length and length * _size(eqn.params["jaxpr"].jaxpr) <= UNROLL_BUDGET


def _stacks(jaxpr, prefix=()):
    """The scope of every equation of `jaxpr`, looking through the calls that are inlined
    (``jax.checkpoint`` / ``nn.remat``, nested jits), whose own equation carries no scope; an
    empty call (what ``nn.remat`` leaves of a ``jax.nn.relu`` in the module ``blocks``) has
    its own."""
    for eqn in jaxpr.eqns:
        stack = prefix + _clean_stack(eqn.source_info.name_stack)
        if eqn.primitive.name in _INLINE and _activation_of(eqn) is None and _body(eqn)[0].eqns:
            yield from _stacks(_body(eqn)[0], stack)
        else:
            yield stack


def _common_scope(body) -> str | None:
    """The one scope every scoped equation of `body` lies in (a Flax ``nn.scan`` module named
    ``blocks``, also inside ``nn.remat``; a ``jax.named_scope("layer")`` around a loop step),
    or None."""
    firsts = {stack[:1] for stack in _stacks(body)} - {()}
    return firsts.pop()[0] if len(firsts) == 1 else None


def _has_unrollable(jaxpr) -> bool:
    return any((eqn.primitive.name == "scan" and _unrollable(eqn))
               or (eqn.primitive.name in _INLINE and _has_unrollable(_body(eqn)[0]))
               for eqn in jaxpr.eqns)


def _folded_index(eqn, ins: list) -> int | None:
    """The value of `eqn` when it clamps or casts the literal integers `ins` to a scalar integer
    (the index of ``lax.switch(1, ...)``, which JAX clamps to the branches), else None."""
    name = eqn.primitive.name
    out = eqn.outvars[0].aval if eqn.outvars else None
    if (name not in ("clamp", "convert_element_type") or not all(isinstance(r, Lit) for r in ins)
            or out is None or out.shape != () or not np.issubdtype(out.dtype, np.integer)):
        return None
    values = [int(np.asarray(r.value)) for r in ins]
    return min(max(values[1], values[0]), values[2]) if name == "clamp" else values[0]


def _literal_index(eqn, indices: dict) -> int | None:
    """The branch that the cond `eqn` takes when its index is a literal or one of `indices`
    (var -> value), else None."""
    if eqn.primitive.name != "cond":
        return None
    index = eqn.invars[0]
    if isinstance(index, jax.extend.core.Literal):
        return int(np.asarray(index.val))
    return indices.get(index)


@functools.lru_cache(maxsize=256)
def _index_template(shape: tuple, dtype):
    """``(a, i) -> a[i]`` traced for an operand of this shape and dtype (a key array's too) and a
    scalar index."""
    return jax.make_jaxpr(lambda a, i: jax.lax.dynamic_index_in_dim(a, i, keepdims=False))(
        jax.ShapeDtypeStruct(shape, dtype), jax.ShapeDtypeStruct((), np.int32))


class _Builder:
    def __init__(self, unroll: bool):
        self.unroll = unroll
        self.nodes: list[Node] = []
        self.consts: dict = {}
        self.avals: dict = {}
        self.opaque_scopes: dict = {}
        self._next = 0
        self._loops: Counter = Counter()  # scope -> unrolled scans without a scope of their own
        self._unrolled = 0  # scans unrolled so far (each one's id)
        self.steps: dict = {}  # step scope of an unrolled scan (``blocks/2``) -> its head
        self.loop_scopes: set = set()  # step scopes of scans without a scope of their own

    def fresh(self, aval) -> int:
        self._next += 1
        self.avals[self._next] = aval
        return self._next

    def inline(self, jaxpr, consts, ins, prefix, relabel=lambda stack: stack):
        """Append the equations of `jaxpr` applied to `ins`, under the scope `prefix` (each
        equation's own scope passed through `relabel` first); returns the output refs."""
        env: dict = {}

        def read(v):
            return Lit(v.val) if isinstance(v, jax.extend.core.Literal) else env[v]

        for var, value in zip(jaxpr.constvars, consts):
            env[var] = self.fresh(var.aval)
            self.consts[env[var]] = value
        for var, ref in zip(jaxpr.invars, ins):
            env[var] = ref
        eqns, last_use, skip_to = jaxpr.eqns, _written_out.last_uses(jaxpr), 0
        indices: dict = {}  # var -> its value, for integers computed from literals only
        for k, eqn in enumerate(eqns):
            if k < skip_to:  # inside a spelled-out activation, computed as one node
                continue
            stack = prefix + relabel(_clean_stack(eqn.source_info.name_stack))
            found = _written_out.match(eqns, k, last_use)
            if found is not None:
                length, invars, outvar, template = found
                env[outvar] = self.fresh(outvar.aval)
                self.nodes.append(Node(template, tuple(read(v) for v in invars), (env[outvar],), stack,
                                       template.params["name"]))
                skip_to = k + length
                continue
            activation = _activation_of(eqn)
            if eqn.primitive.name in _INLINE and activation is None:
                # the body's scopes are the call's scope followed by their own, relabelled as
                # one (inside a loop step: ``remat`` of the scanned module)
                local = _clean_stack(eqn.source_info.name_stack)
                outs = self.inline(*_body(eqn), [read(v) for v in eqn.invars], prefix,
                                   relabel=lambda s, local=local: relabel(local + s))
                for var, ref in zip(eqn.outvars, outs):
                    env[var] = ref
                continue
            if (index := _folded_index(eqn, [read(v) for v in eqn.invars])) is not None:
                indices[eqn.outvars[0]] = index  # a lax.switch's clamp of a literal index
            chosen = _literal_index(eqn, indices)
            if chosen is not None:
                # a branch chosen by a constant (a config switch): its equations, as if written
                # out, so that sites and rules reach inside
                branch = eqn.params["branches"][chosen]
                local = _clean_stack(eqn.source_info.name_stack)
                outs = self.inline(branch.jaxpr, branch.consts, [read(v) for v in eqn.invars[1:]],
                                   prefix, relabel=lambda s, local=local: relabel(local + s))
                for var, ref in zip(eqn.outvars, outs):
                    env[var] = ref
                continue
            if self.unroll and eqn.primitive.name == "scan" and _unrollable(eqn):
                outs = self._unroll(eqn, [read(v) for v in eqn.invars], stack)
                for var, ref in zip(eqn.outvars, outs):
                    env[var] = ref
                continue
            if eqn.primitive.name in _OPAQUE:
                self._note_opaque_scopes(eqn, stack, eqn.primitive.name)
            if eqn.primitive.name == "scan" and not _unrollable(eqn):
                self._note_steps(eqn, stack)
            outs = tuple(self.fresh(v.aval) for v in eqn.outvars)
            for var, ref in zip(eqn.outvars, outs):
                env[var] = ref
            self.nodes.append(Node(eqn, tuple(read(v) for v in eqn.invars), outs, stack, activation))
        return [read(v) for v in jaxpr.outvars]

    def _apply(self, fn, ins, stack) -> list:
        """Append the equations of ``fn(*ins)`` (traced at the operands' shapes)."""
        specs = [jax.ShapeDtypeStruct(self.avals[r].shape, self.avals[r].dtype) if isinstance(r, int)
                 else jax.ShapeDtypeStruct(np.shape(r.value), jnp.asarray(r.value).dtype) for r in ins]
        closed = jax.make_jaxpr(fn)(*specs)
        return self.inline(closed.jaxpr, closed.consts, list(ins), stack)

    def _index(self, ref, i: int, stack) -> int:
        aval = self.avals[ref]
        template = _index_template(tuple(aval.shape), aval.dtype)
        return self.inline(template.jaxpr, template.consts, [ref, Lit(np.int32(i))], stack)[0]

    def _unroll(self, eqn, ins, stack) -> list:
        """The equations of a scan's iterations one after another; returns its output refs."""
        params = eqn.params
        length, n_consts, n_carry = params["length"], params["num_consts"], params["num_carry"]
        body = params["jaxpr"]
        consts, carry, xs = ins[:n_consts], ins[n_consts:n_consts + n_carry], ins[n_consts + n_carry:]
        head, prefix, first = _common_scope(body.jaxpr), stack, 0
        if head is None:  # iterations scoped "scan/0", "scan/1", a second loop "scan_1/0", ...
            k = self._loops[stack]
            self._loops[stack] += 1
            name = _LOOP_SCOPE if k == 0 else f"{_LOOP_SCOPE}_{k}"

            def scope(s, i):
                return (name, str(i)) + s
        else:  # "blocks/0/dense", "blocks/1/dense", ...
            outer = self.steps.get(stack)
            if outer == head:  # a scan of the steps of a scan of the
                # same module (``nn.remat_scan``): step j of outer step i is step i * length + j
                prefix, first = stack[:-2], int(stack[-1]) * length

            def scope(s, i):
                return (head, str(first + i)) + s[1:]
        self._unrolled += 1
        loop, at = self._unrolled, len(prefix) + 1
        ys = [[None] * length for _ in body.jaxpr.outvars[n_carry:]]
        for i in (reversed(range(length)) if params["reverse"] else range(length)):
            x_i = [self._index(x, i, stack) for x in xs]
            step_scope = prefix + scope((), i)[:2]
            self.steps[step_scope] = step_scope[-2]
            if head is None:
                self.loop_scopes.add(step_scope)
            start = len(self.nodes)
            outs = self.inline(body.jaxpr, body.consts, consts + carry + x_i, prefix,
                               relabel=lambda s, i=i: scope(s, i))
            for k in range(start, len(self.nodes)):  # a nested loop's nodes keep their own
                if self.nodes[k].step is None:
                    self.nodes[k] = dataclasses.replace(self.nodes[k], step=(loop, at, k - start))
            carry = outs[:n_carry]
            for k, y in enumerate(outs[n_carry:]):
                ys[k][i] = y
        stacked = [self._apply(lambda *a: jnp.stack(a), y, stack)[0] for y in ys]
        return carry + stacked

    def _note_steps(self, eqn, stack):
        """Record the numbered scopes a scan left whole would have had unrolled
        (``blocks/3``, ``blocks/3/lin``), so that asking for one says why it is no site."""
        body = eqn.params["jaxpr"].jaxpr
        head = _common_scope(body)
        if head is None:  # the name its iterations would get were it the next loop unrolled
            k = self._loops[stack]
            head, rest = (_LOOP_SCOPE if k == 0 else f"{_LOOP_SCOPE}_{k}"), lambda s: s
        else:
            rest = lambda s: s[1:]  # noqa: E731
        inner = {rest(s) for s in _stacks(body)}
        for i in range(eqn.params["length"]):
            for scope in inner | {()}:
                full = stack + (head, str(i)) + scope
                for k in range(len(stack) + 2, len(full) + 1):
                    self.opaque_scopes.setdefault("/".join(full[:k]), "scan")

    def _note_opaque_scopes(self, eqn, stack, outer: str):
        for inner in _sub_jaxprs(eqn.params):
            for sub in inner.eqns:
                full = stack + _clean_stack(sub.source_info.name_stack)
                for k in range(len(stack) + 1, len(full) + 1):
                    self.opaque_scopes.setdefault("/".join(full[:k]), outer)
                if sub.primitive.name in _OPAQUE | _INLINE:
                    self._note_opaque_scopes(sub, full, outer)


def edit_scope(name: str, channels: int | None, batch) -> str:
    """The scope under which `intervene` computes the new value of the site `name` (its path,
    root included), recording the layout of the value it replaces: its channel axis and its
    batch axis (an int, the batch analysis's ``"shared"``, or None when unknown). The analyses
    of the edited function read that layout from here, so an edit never changes it, even one
    whose value does not depend on x."""
    axes = ":".join("-" if a is None else str(a) for a in (channels, batch))
    return f"{name}{EDIT_MARK}/{_LAYOUT_MARK}{axes}"


def _edit_scope(node: Node) -> tuple | None:
    """The stack up to the intervention mark when `node` computes an intervention's value."""
    k = next((k for k, part in enumerate(node.stack) if part.endswith(EDIT_MARK)), None)
    return None if k is None else node.stack[: k + 1]


def _edit_layout(node: Node) -> tuple:
    """``(channel axis, batch axis)`` that `edit_scope` recorded in `node`'s stack (None, None
    for an edit scope without it)."""
    k = len(_edit_scope(node))
    part = node.stack[k] if k < len(node.stack) else ""
    if not part.startswith(_LAYOUT_MARK):
        return None, None
    return tuple(None if a == "-" else int(a) if a.lstrip("-").isdigit() else a
                 for a in part[len(_LAYOUT_MARK):].split(":"))


def _edit_results(nodes) -> list[int]:
    """Indices of the nodes that compute an intervention's result: the last of each run of
    nodes in one edit scope."""
    scopes = [_edit_scope(node) for node in nodes] + [None]
    return [k for k, scope in enumerate(scopes[:-1]) if scope is not None and scopes[k + 1] != scope]


def _depends(nodes, input_id, results, *, stop: bool = False) -> frozenset:
    """Ids of the values computed from the input or from an intervention's new value (the
    nodes `results`), so that an edit setting a site to a constant still feeds later sites;
    with `stop`, only along paths that pass no ``stop_gradient``.

    A gradient gate ``select_n(p, stop_gradient(v), v)`` is `v` whatever its predicate, so it
    depends on the input only when `v` does: ``vmap`` of a ``lax.cond`` (or ``lax.switch``)
    whose predicate depends on x gates every operand of each branch so, its weights too, which
    stay weights (the layers that read them are linear in their data, not products of two
    input-dependent values)."""
    live, results, gated = {input_id}, set(results), {}
    for k, node in enumerate(nodes):
        if node.prim == "stop_gradient":
            gated[node.outs[0]] = node.ins[0]
            if stop:
                continue
        ins = node.ins[1:] if gradient_gate(node, gated) else node.ins
        if k in results or any(isinstance(r, int) and r in live for r in ins):
            live.update(node.outs)
    return frozenset(live)


def gradient_gate(node: Node, gated: dict) -> bool:
    """Whether `node` is ``select_n(p, stop_gradient(v), v)`` (cases in either order), where
    `gated` maps each ``stop_gradient``'s output to its operand."""
    if node.prim != "select_n" or len(node.ins) != 3:
        return False
    a, b = node.ins[1:]
    return isinstance(a, int) and isinstance(b, int) and (gated.get(a) == b or gated.get(b) == a)


def _assemble(closed, out_shape, unroll: bool) -> Program:
    builder = _Builder(unroll)
    input_id = builder.fresh(closed.jaxpr.invars[0].aval)
    outs = builder.inline(closed.jaxpr, closed.consts, [input_id], ())
    nodes = tuple(_fold_rectifiers(builder.nodes, input_id, outs, builder.avals))
    results = _edit_results(nodes)
    depends = _depends(nodes, input_id, results)
    return Program(
        nodes=nodes,
        consts=builder.consts,
        input_id=input_id,
        output_ids=tuple(outs),
        out_tree=jax.tree_util.tree_structure(out_shape),
        avals=builder.avals,
        opaque_scopes=builder.opaque_scopes,
        depends=depends,
        loop_scopes=frozenset(builder.loop_scopes),
        edits={nodes[k].outs[0]: _edit_layout(nodes[k]) for k in results if nodes[k].outs},
        stopped=depends - _depends(nodes, input_id, results, stop=True),
    )


def _build(f: Callable, spec: jax.ShapeDtypeStruct) -> Program:
    closed, out_shape = jax.make_jaxpr(f, return_shape=True)(spec)
    program = _assemble(closed, out_shape, unroll=False)
    if _has_unrollable(closed.jaxpr):
        program = dataclasses.replace(program, unrolled=_assemble(closed, out_shape, unroll=True))
    return program


_CACHE: "weakref.WeakKeyDictionary[Callable, dict]" = weakref.WeakKeyDictionary()
# The public flags of `jax.config` that change what tracing a function gives, among those that
# `jax.jit` keys its cache on (its trace context): the dtypes (x64, and explicit 64-bit dtypes),
# the precision baked into each dot_general, type and rank promotion, softmax's derivative, and
# the bits that `jax.random` draws inside `f`. The first two are read strictly; the others may
# go in a later JAX (a flag that is gone changes nothing).
_STRICT_FLAGS = ("jax_enable_x64", "jax_default_matmul_precision")
_OTHER_FLAGS = ("jax_explicit_x64_dtypes", "jax_numpy_dtype_promotion", "jax_numpy_rank_promotion",
                "jax_softmax_custom_jvp", "jax_threefry_partitionable", "jax_random_seed_offset")
def trace_context() -> tuple:
    """The values of the `jax.config` flags that change a trace, as they are now (inside
    ``jax.enable_x64(True)`` or ``jax.default_matmul_precision("highest")`` too)."""
    return (tuple(getattr(jax.config, name) for name in _STRICT_FLAGS)
            + tuple(getattr(jax.config, name, None) for name in _OTHER_FLAGS))


def trace(f: Callable, spec: jax.ShapeDtypeStruct) -> Program:
    """Trace `f` at the input shape/dtype `spec`; cached per (f, shape, dtype, trace context)
    when possible, as `jax.jit` caches its traces (see :func:`trace_context`).

    Programs whose constants are tracers (`f` closes over values of an enclosing transformation)
    are never cached, so no tracer outlives its trace. A new trace of a function already traced
    under the same flags (at another input shape) is checked against the first: when the
    weights `f` reads changed since, warns once per function with
    :class:`~jaxplain.core.ChangedWeightsWarning`. A cached program that holds an array deleted
    since (weights donated to a training step) is traced again, as a new shape would be.
    """
    context = trace_context()
    key = (tuple(spec.shape), np.dtype(spec.dtype), context)
    try:
        per_f = _CACHE.setdefault(f, {})
    except TypeError:  # not weak-referenceable: trace every time
        per_f = None
    cached = None if per_f is None else per_f.get(key)
    if cached is not None and not any(map(is_deleted, cached.consts.values())):
        return cached
    # JAX keeps a trace of `f` per shape too, with the arrays `f` read then: past a deleted
    # one, trace a new function that calls `f`, which JAX has no trace of
    program = _build(f if cached is None else lambda v: f(v), spec)
    if per_f is not None and not any(isinstance(c, jax.core.Tracer) for c in program.consts.values()):
        per_f[key] = program
        with jax.ensure_compile_time_eval():  # trace() may run inside a method's jit
            check_weights(f, context, tuple(program.consts.values()))
    return program


def run(program: Program, x, *, after: Callable[[int, Node, list], list] | None = None,
        replace: Callable[[int, Node, dict], list | None] | None = None):
    """Evaluate `program` on `x`.

    Args:
      program: the traced program.
      x: the input, shaped like the traced spec (any JAX trace may be active).
      after: optional `after(i, node, outs) -> outs`, called on each node's outputs (capture and
        intervention hook in here).
      replace: optional `replace(i, node, env) -> outs or None`; a non-None result is used
        instead of binding the node (rewrite_backward hooks in here).

    Returns:
      (outputs pytree, env) where env maps value ids to values.
    """
    env = dict(program.consts)
    env[program.input_id] = x

    def read(r):
        return r.value if isinstance(r, Lit) else env[r]

    for i, node in enumerate(program.nodes):
        outs = replace(i, node, env) if replace is not None else None
        if outs is None:
            outs = node.bind(*[read(r) for r in node.ins])
        if after is not None:
            outs = after(i, node, outs)
        for ref, value in zip(node.outs, outs):
            env[ref] = value
    flat = [read(r) for r in program.output_ids]
    return jax.tree_util.tree_unflatten(program.out_tree, flat), env
