"""What a model's output is: logits, or the result of a softmax over the classes.

Methods that promise summation or conservation (DeepLIFT, LRP) redistribute the output they
start from through the model's rules; a final ``jax.nn.softmax`` mixes the classes and has no
such rule, so they need the logits. The faithfulness metrics read "the target's probability"
by applying a softmax to the output; on a model that outputs probabilities already that would
be a second softmax. :func:`output_activation` tells them, from the traced program: the last
operation before the output (through dtype casts and reshapes that keep the class axis) is a
softmax or log-softmax over the last axis, as :func:`jaxplain.sites` finds them (``jax.nn.softmax``
written out inline, or a ``jit`` named ``softmax`` / ``log_softmax``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import jax
import numpy as np

from jaxplain.core._program import Program, trace

# Ops that change neither the values nor the meaning of the class axis.
_PASS = frozenset({"convert_element_type", "copy", "copy_p", "reshape", "squeeze",
                   "reduce_precision"})
_SOFTMAXES = ("softmax", "log_softmax")

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


def _activation(program: Program) -> str | None:
    if len(program.output_ids) != 1 or not isinstance(program.output_ids[0], int):
        return None
    producer = {ref: node for node in program.nodes for ref in node.outs}
    ref = program.output_ids[0]
    classes = program.avals[ref].shape[-1:] if program.avals[ref].shape else None
    while ref in producer:
        node = producer[ref]
        if node.activation in _SOFTMAXES:
            ok = _over_last_axis(node) and program.avals[node.outs[0]].shape[-1:] == classes
            return node.activation if ok else None
        data = [r for r in node.ins if isinstance(r, int)]
        if node.prim not in _PASS or len(data) != 1:
            return None
        ref = data[0]
    return None


def output_activation(f: Callable, x) -> str | None:
    """``"softmax"`` or ``"log_softmax"`` when `f`'s output at `x`'s shape comes straight out
    of one over the classes (the last axis), else None. Traced once per function, input shape
    and dtype (only ``x.shape`` and ``x.dtype`` are used; `x` may be a tracer)."""
    key = (tuple(x.shape), np.dtype(x.dtype).str)
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
