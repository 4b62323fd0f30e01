"""What a model's output is: logits, or the result of a softmax over the classes.

Methods that promise summation or conservation (DeepLIFT, LRP) redistribute the output they
start from through the model's rules; a final ``jax.nn.softmax`` mixes the classes and has no
such rule, so they need the logits. The faithfulness metrics read "the target's probability"
by applying a softmax to the output; on a model that outputs probabilities already that would
be a second softmax. :func:`output_activation` tells them, from the traced program: the last
operation before the output (through dtype casts and reshapes that keep the class axis) is a
softmax or log-softmax over the last axis: ``jax.nn.softmax`` / ``log_softmax`` (inline, or a
``jit`` named after them) as :func:`jaxplain.sites` finds them, or one written by hand,
``e / e.sum(-1, keepdims=True)`` with ``e = exp(z)`` (or ``exp(z - max)``), and
``z - log(sum(exp(z)))`` (or ``z - logsumexp(z)``).

Patterns miss heads that end in something else (``jnp.clip(jax.nn.softmax(z), 1e-7, 1)``,
``jnp.exp(jax.nn.log_softmax(z))``, a softmax times 1.0), so the metrics also look at the values:
:func:`as_probabilities` reads a row that is non-negative and sums to 1 (within the dtype's
tolerance, :func:`given_probabilities`) as the probabilities it is, and takes the softmax of any
other row, per row with ``jnp.where`` (no host round trip, so it works under ``jit``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.core._function_cache import per_function
from jaxplain.core._program import Lit, Program, trace

# Ops that change neither the values nor the meaning of the class axis.
_PASS = frozenset({"convert_element_type", "copy", "copy_p", "reshape", "squeeze",
                   "reduce_precision"})
_SOFTMAXES = ("softmax", "log_softmax")
# Ops between a hand-written softmax's normaliser and the division or subtraction that uses it.
_SHAPING = frozenset({"broadcast_in_dim", "reshape", "convert_element_type", "expand_dims",
                      "stop_gradient", "abs"})

_CACHE: "weakref.WeakKeyDictionary[Callable, dict]" = weakref.WeakKeyDictionary()


def _over_last_axis(node) -> bool:
    """True when the softmax `node` (a ``jit`` named after it) normalises over its last axis."""
    body = node.eqn.params.get("jaxpr")
    body = getattr(body, "jaxpr", body)
    rank = len(node.eqn.outvars[0].aval.shape)
    for eqn in getattr(body, "eqns", ()):
        if eqn.primitive.name in ("reduce_max", "reduce_sum"):
            return tuple(eqn.params["axes"]) == (rank - 1,)
    return False


def _data(node) -> list[int]:
    return [r for r in node.ins if isinstance(r, int)]


def _same(a, b, producer, depth: int = 64) -> bool:
    """True when values `a` and `b` are one, or computed by the same ops from the same inputs
    (a model that writes ``exp(z(x)) / sum(exp(z(x)))`` computes ``z(x)`` twice)."""
    if a == b:
        return True
    na, nb = producer.get(a), producer.get(b)
    if depth == 0 or na is None or nb is None or na.prim != nb.prim or len(na.ins) != len(nb.ins):
        return False
    if na.eqn.params != nb.eqn.params:
        return False
    return all(_same(p, q, producer, depth - 1) if isinstance(p, int) and isinstance(q, int)
               else _same_literal(p, q) for p, q in zip(na.ins, nb.ins))


def _same_literal(p, q) -> bool:
    if p is q:
        return True
    return (isinstance(p, Lit) and isinstance(q, Lit) and np.shape(p.value) == ()
            and np.shape(q.value) == () and bool(p.value == q.value))


def _exp_input(ref, producer) -> int | None:
    """`u` when `ref` is ``exp(u)``, else None."""
    node = producer.get(ref)
    return node.ins[0] if node is not None and node.prim == "exp" else None


def _sum_of_exp(ref, producer, rank: int) -> int | None:
    """`u` when `ref` is ``sum(exp(u))`` over the last of `rank` axes (through reshapes and
    broadcasts), else None."""
    node = producer.get(ref)
    while node is not None and node.prim in _SHAPING and len(_data(node)) == 1:
        node = producer.get(_data(node)[0])
    if node is None or node.prim != "reduce_sum" or tuple(node.eqn.params["axes"]) != (rank - 1,):
        return None
    return _exp_input(node.ins[0], producer)


def _logs_sum_of_exp_of(z: int, ref, producer, rank: int) -> bool:
    """True when `ref` is ``log(sum(exp(w)))`` over the last axis, plus any shift, with `w` being
    `z` or ``z - shift`` (``logsumexp(z)`` written out, by hand or by ``jax.nn.logsumexp``)."""
    pending, seen = [ref], set()
    while pending:
        node = producer.get(pending.pop())
        if node is None or node in seen:
            continue
        seen.add(node)
        if node.prim == "log" and isinstance(node.ins[0], int):
            w = _sum_of_exp(node.ins[0], producer, rank)
            shifted = producer.get(w)
            if w is not None and (_same(w, z, producer) or (
                    shifted is not None and shifted.prim == "sub" and _same(shifted.ins[0], z, producer))):
                return True
        elif node.prim in _SHAPING or node.prim == "add":
            pending.extend(_data(node))
    return False


def _by_hand(node, producer) -> str | None:
    """``"softmax"`` / ``"log_softmax"`` when `node` ends one written out by hand over the last
    axis: ``exp(u) / sum(exp(u))`` or ``z - log(sum(exp(z - shift))) [- shift]``."""
    rank = len(node.eqn.outvars[0].aval.shape)
    if rank == 0 or len(_data(node)) != 2:
        return None
    a, b = node.ins
    if node.prim == "div":
        u = _exp_input(a, producer)
        v = _sum_of_exp(b, producer, rank)
        return "softmax" if u is not None and v is not None and _same(u, v, producer) else None
    if node.prim == "sub":
        return "log_softmax" if _logs_sum_of_exp_of(a, b, producer, rank) else None
    return None


def _activation(program: Program) -> str | None:
    if len(program.output_ids) != 1 or not isinstance(program.output_ids[0], int):
        return None
    producer = {ref: node for node in program.nodes for ref in node.outs}
    ref = program.output_ids[0]
    classes = program.avals[ref].shape[-1:] if program.avals[ref].shape else None
    logged = False  # a log passed on the way: jnp.log(jax.nn.softmax(z)) is a log-softmax
    while ref in producer:
        node = producer[ref]
        if node.activation == "softmax" and logged:
            ok = _over_last_axis(node) and program.avals[node.outs[0]].shape[-1:] == classes
            return "log_softmax" if ok else None
        if node.prim == "log" and not logged and len(_data(node)) == 1:
            logged, ref = True, _data(node)[0]
            continue
        if node.activation == "sigmoid" and not logged:  # elementwise: any axis
            return "sigmoid"
        if node.activation in _SOFTMAXES:
            ok = _over_last_axis(node) and program.avals[node.outs[0]].shape[-1:] == classes
            return node.activation if ok else None
        if node.prim in ("div", "sub"):
            written = _by_hand(node, producer)
            same_classes = program.avals[node.outs[0]].shape[-1:] == classes
            if logged:
                return "log_softmax" if written == "softmax" and same_classes else None
            return written if same_classes else None
        data = _data(node)
        if node.prim not in _PASS or len(data) != 1:
            return None
        ref = data[0]
    return None


def output_activation(f: Callable, x) -> str | None:
    """``"softmax"`` or ``"log_softmax"`` when `f`'s output at `x`'s shape comes straight out
    of one over the classes (the last axis), ``"sigmoid"`` when it comes out of
    ``jax.nn.sigmoid`` (multi-label), else None. Traced once per function, input shape
    and dtype (only ``x.shape`` and ``x.dtype`` are used; `x` may be a tracer)."""
    key = (tuple(x.shape), np.dtype(x.dtype))
    try:
        per_f = _CACHE.setdefault(f, {})
    except TypeError:  # not weak-referenceable: trace every time
        per_f = {}
    if key not in per_f:
        per_f[key] = _activation(trace(f, jax.ShapeDtypeStruct(key[0], key[1])))
    return per_f[key]


def output_is_softmax(f: Callable, x) -> bool:
    """True when `f` outputs probabilities: its output is ``jax.nn.softmax`` over the classes.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> logits = lambda x: x @ jnp.ones((3, 4))
      >>> output_is_softmax(lambda x: jax.nn.softmax(logits(x)), jnp.ones((2, 3)))
      True
      >>> output_is_softmax(logits, jnp.ones((2, 3)))
      False
    """
    return output_activation(f, x) == "softmax"


def output_is_probability(f: Callable, x) -> bool:
    """True when `f`'s outputs are probabilities already: a softmax over the classes, or a
    sigmoid per output (multi-label or one-logit binary models)."""
    return output_activation(f, x) in ("softmax", "sigmoid")


def _last_axis(f: Callable, shape: tuple, dtype) -> tuple:
    """The size of `f`'s output's last axis at an input of `shape` and `dtype`, as a tuple
    (empty for a scalar); traced once per function, shape and dtype."""
    try:
        return _last_axis_cached(f, shape, dtype)
    except TypeError:  # not hashable: trace every time
        return _last_axis_cached.__wrapped__(f, shape, dtype)


@per_function(maxsize_fallback=256)
def _last_axis_cached(f: Callable, shape: tuple, dtype) -> tuple:
    out = jax.eval_shape(f, jax.ShapeDtypeStruct(shape, dtype))
    return tuple(getattr(out, "shape", (None,))[-1:])


def probability_as_given(f: Callable, x, asked: str, instead: str | None = None) -> bool:
    """For a reading of the target's probability (`asked` says what asked for it, `instead`
    the option that reads the output as it is): True to read `f`'s output as it is (a softmax
    or a sigmoid), False to take the softmax of its logits. Refuses a model with one output,
    whose softmax is always 1."""
    if output_is_probability(f, x):
        return True
    if _last_axis(f, tuple(x.shape), np.dtype(x.dtype)) == (1,):
        remedy = f"pass {instead} to read the output as it is (a regression, or a one-logit " \
                 "binary classifier), or " if instead else ""
        raise ValueError(
            f"{asked} reads the softmax of the logits over the classes, but the model has one "
            f"output, whose softmax is always 1: {remedy}end the model in jax.nn.sigmoid, whose "
            "output is read as the probability it is.")
    return False


# A row sums to 1 within this (float32: clipping 10,000 softmax outputs at 1e-7 adds 1e-3), or
# within 4 units in the last place of its dtype where that is coarser (bfloat16: 0.03).
_SUM_TOLERANCE = 1e-3


def given_probabilities(z: jax.Array) -> jax.Array:
    """``(..., 1)`` True for the rows of `z` (over its last axis) that are probabilities already:
    non-negative, summing to 1 within ``max(1e-3, 4 eps)`` of `z`'s dtype (summed in float32 at
    least). Log-softmax rows (all <= 0) and logits are not; a logit row that happens to be one
    (``[1, 0, 0]``) is, and is read as given."""
    wide = z.astype(jnp.promote_types(z.dtype, jnp.float32))
    tolerance = max(_SUM_TOLERANCE, 4 * float(jnp.finfo(z.dtype).eps))
    return ((wide >= 0).all(-1, keepdims=True)
            & (jnp.abs(wide.sum(-1, keepdims=True) - 1) <= tolerance))


def as_probabilities(z: jax.Array, *, log: bool = False) -> jax.Array:
    """The softmax of `z` over its last axis (``log``: the log-softmax), except the rows that are
    probabilities already (:func:`given_probabilities`, checked at `z`'s own dtype), read as
    they are (``log``: their log, 0 counted as the smallest normal float). Computed and
    returned in `z`'s dtype widened to float32 at least. Per row with ``jnp.where``: works
    under ``jit``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> p = as_probabilities(jnp.array([[0.75, 0.25], [3.0, 1.0]]))
      >>> p[0].tolist(), bool(jnp.array_equal(p[1], jax.nn.softmax(jnp.array([3.0, 1.0]))))
      ([0.75, 0.25], True)
    """
    given = given_probabilities(z)
    wide = z.astype(jnp.promote_types(z.dtype, jnp.float32))
    if log:
        return jnp.where(given, jnp.log(jnp.maximum(wide, jnp.finfo(wide.dtype).tiny)),
                         jax.nn.log_softmax(wide, axis=-1))
    return jnp.where(given, wide, jax.nn.softmax(wide, axis=-1))
