"""Activations that JAX writes out as several equations, found and turned back into one.

``jax.nn.gelu`` (and so Flax's ``nn.gelu``) and ``jax.nn.softmax`` over the last axis (the
attention weights of Flax's attention layers) are not named calls in a trace: their arithmetic
appears inline (for GELU ``tanh`` or ``erfc``), so the kernel would see a ``tanh`` activation and an ``add``
of two input-dependent values where the model has one GELU. :func:`match` recognises such a run
of equations by comparing it with a reference trace of the same function at the same shape and
dtype (same primitives, parameters, literals and wiring, and no intermediate value used
elsewhere), and gives a template equation, a ``jit`` named after the activation, that computes
the same value with the same primitives.
"""

from __future__ import annotations

import functools

import jax
import jax.extend
import numpy as np


def _gelu_tanh(a):
    return jax.nn.gelu(a, approximate=True)


def _gelu_erf(a):
    return jax.nn.gelu(a, approximate=False)


def _softmax(a):
    return jax.nn.softmax(a, axis=-1)


# activation name -> the functions whose traces spell it out
WRITTEN_OUT = {"gelu": (_gelu_tanh, _gelu_erf), "softmax": (_softmax,)}


@functools.cache
def _signatures() -> tuple:
    """``(name, index, primitive names)`` of each spelled-out activation, traced once at a
    float32 vector: a cheap first test before the trace at the candidate's own aval."""
    vector = jax.ShapeDtypeStruct((2,), np.float32)
    found = []
    for name, fns in WRITTEN_OUT.items():
        for index, fn in enumerate(fns):
            names = tuple(e.primitive.name for e in jax.make_jaxpr(fn)(vector).jaxpr.eqns)
            if len(names) > 1:  # a single equation is a named call already: nothing to undo
                found.append((name, index, names))
    return tuple(found)


@functools.lru_cache(maxsize=256)
def _reference(name: str, index: int, shape: tuple, dtype: str, weak_type: bool) -> tuple:
    """``(eqns, invar, outvar, template)``: the activation traced at this aval, and one ``jit``
    equation named after it that computes the same."""
    fn = WRITTEN_OUT[name][index]
    spec = jax.ShapeDtypeStruct(shape, np.dtype(dtype), weak_type=weak_type)
    jaxpr = jax.make_jaxpr(fn)(spec).jaxpr

    def named(a):
        return fn(a)

    named.__name__ = name
    template = jax.make_jaxpr(jax.jit(named))(spec).jaxpr.eqns[0]
    return tuple(jaxpr.eqns), jaxpr.invars[0], jaxpr.outvars[0], template


def _same_literal(a, b) -> bool:
    va, vb = np.asarray(a.val), np.asarray(b.val)
    return va.dtype == vb.dtype and va.shape == vb.shape and bool(np.all(va == vb))


def _output_if_match(ref_eqns, ref_in, ref_out, eqns, k, value, last_use):
    """The var ``eqns[k:k + len(ref_eqns)]`` computes as ``ref_out`` from ``value`` when they
    spell out ``ref_eqns`` and no other value of theirs is read elsewhere, else None."""
    if k + len(ref_eqns) > len(eqns):
        return None
    mapping = {ref_in: value}
    for ref, eqn in zip(ref_eqns, eqns[k:]):
        if (ref.primitive is not eqn.primitive or ref.params != eqn.params
                or len(ref.invars) != len(eqn.invars)):
            return None
        for r, v in zip(ref.invars, eqn.invars):
            if isinstance(r, jax.extend.core.Literal):
                if not (isinstance(v, jax.extend.core.Literal) and _same_literal(r, v)):
                    return None
            elif isinstance(v, jax.extend.core.Literal) or mapping.get(r) is not v:
                return None
        mapping.update(zip(ref.outvars, eqn.outvars))
    end, out = k + len(ref_eqns) - 1, mapping[ref_out]
    inner = [v for eqn in eqns[k:end + 1] for v in eqn.outvars if v is not out]
    return out if all(last_use.get(v, -1) <= end for v in inner) else None


def last_uses(jaxpr) -> dict:
    """Var -> index of the last equation reading it (``len(eqns)`` for the jaxpr's outputs)."""
    last = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if not isinstance(v, jax.extend.core.Literal):
                last[v] = i
    for v in jaxpr.outvars:
        if not isinstance(v, jax.extend.core.Literal):
            last[v] = len(jaxpr.eqns)
    return last


def match(eqns, k: int, last_use: dict):
    """``(length, input var, output var, template eqn)`` when a spelled-out activation starts at
    ``eqns[k]``, else None."""
    first = eqns[k].primitive.name
    for name, index, names in _signatures():
        if names[0] != first:  # the common case: one string comparison per equation
            continue
        window = eqns[k:k + len(names)]
        if tuple(e.primitive.name for e in window) != names:
            continue
        for v in window[0].invars:
            if isinstance(v, jax.extend.core.Literal) or not hasattr(v.aval, "shape"):
                continue
            ref_eqns, ref_in, ref_out, template = _reference(
                name, index, tuple(v.aval.shape), np.dtype(v.aval.dtype).str,
                bool(getattr(v.aval, "weak_type", False)))
            out = _output_if_match(ref_eqns, ref_in, ref_out, eqns, k, v, last_use)
            if out is not None:
                return len(ref_eqns), v, out, template
    return None
