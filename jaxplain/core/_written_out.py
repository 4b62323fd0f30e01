"""Activations that JAX writes out as several equations, found and turned back into one.

``jax.nn.gelu`` (and so Flax's ``nn.gelu``) and ``jax.nn.softmax`` over the last axis (the
attention weights of Flax's attention layers; also with a ``where=`` mask, and as
``jax.nn.dot_product_attention`` computes it, which Flax NNX's attention calls) are not named
calls in a trace: their arithmetic
appears inline (for GELU ``tanh`` or ``erfc``), so the kernel would see a ``tanh`` activation and an ``add``
of two input-dependent values where the model has one GELU. :func:`match` recognises such a run
of equations by comparing it with a reference trace of the same function at the same shape and
dtype (same primitives, parameters, literals and wiring, and no intermediate value used
elsewhere), and gives a template equation, a ``jit`` named after the activation, that computes
the same value with the same primitives.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np


def _gelu_tanh(a):
    return jax.nn.gelu(a, approximate=True)


def _gelu_erf(a):
    return jax.nn.gelu(a, approximate=False)


def _softmax(a):
    return jax.nn.softmax(a, axis=-1)


def _masked_softmax(a, mask):
    """``jax.nn.softmax(a, where=mask)``: a causal or padding mask given to the softmax."""
    return jax.nn.softmax(a, axis=-1, where=mask)


def _mapped_softmax(axis: int) -> Callable:
    """The softmax over the last axis vmapped over `axis`, its mapped axis first: how
    ``jax.nn.dot_product_attention`` (and so Flax NNX's attention) computes its weights, mapped
    over the groups of query heads."""
    return jax.vmap(_softmax, in_axes=axis, out_axes=0)


@dataclasses.dataclass(frozen=True)
class _Spelling:
    """One way JAX spells out an activation: `build(variant)` is a function of the inputs whose
    trace is that spelling, `probe` the input avals ``(shape, dtype)`` at which its primitive
    names are first read (with `probe_variant`)."""

    name: str
    build: Callable
    probe: tuple
    kind: str = "unary"  # how the inputs are found: "unary", "mapped" (an axis too), "masked"
    probe_variant: int | None = None


_F32, _VECTOR = "float32", ((2,), "float32")
SPELLINGS = (
    _Spelling("gelu", lambda _: _gelu_tanh, (_VECTOR,)),
    _Spelling("gelu", lambda _: _gelu_erf, (_VECTOR,)),
    _Spelling("softmax", lambda _: _softmax, (_VECTOR,)),
    _Spelling("softmax", lambda _: _softmax, (((2,), jnp.bfloat16),)),  # sums in float32
    _Spelling("softmax", lambda _: _masked_softmax, (((2, 2), _F32), ((2, 2), "bool")), "masked"),
    _Spelling("softmax", _mapped_softmax, (((2, 2, 2), _F32),), "mapped", probe_variant=1),
)


@functools.cache
def _signatures() -> tuple:
    """``(index into SPELLINGS, primitive names)`` of each spelling, traced once at its probe: a
    cheap first test before the trace at the candidate's own avals."""
    found = []
    for index, spelling in enumerate(SPELLINGS):
        specs = [jax.ShapeDtypeStruct(shape, np.dtype(dtype)) for shape, dtype in spelling.probe]
        fn = spelling.build(spelling.probe_variant)
        names = tuple(e.primitive.name for e in jax.make_jaxpr(fn)(*specs).jaxpr.eqns)
        if len(names) > 1:  # a single equation is a named call already: nothing to undo
            found.append((index, names))
    return tuple(found)


@functools.lru_cache(maxsize=256)
def _reference(index: int, variant, avals: tuple) -> tuple:
    """``(eqns, invars, outvar, template)``: spelling `index` traced at `avals` (``(shape, dtype,
    weak_type)`` per input), and one ``jit`` equation named after it that computes the same."""
    spelling = SPELLINGS[index]
    fn = spelling.build(variant)
    specs = [jax.ShapeDtypeStruct(shape, np.dtype(dtype), weak_type=weak)
             for shape, dtype, weak in avals]
    jaxpr = jax.make_jaxpr(fn)(*specs).jaxpr

    def named(*a):
        return fn(*a)

    named.__name__ = spelling.name
    template = jax.make_jaxpr(jax.jit(named))(*specs).jaxpr.eqns[0]
    return tuple(jaxpr.eqns), tuple(jaxpr.invars), jaxpr.outvars[0], template


def _aval(v) -> tuple:
    return (tuple(v.aval.shape), np.dtype(v.aval.dtype), bool(getattr(v.aval, "weak_type", False)))


def _candidates(spelling: _Spelling, first) -> list:
    """``(input vars, variant)`` the spelling could start from at the equation `first`."""
    arrays = [v for v in first.invars
              if not isinstance(v, jax.extend.core.Literal) and hasattr(v.aval, "shape")]
    if spelling.kind == "masked":  # its first equation is where(mask, a, -inf)
        masks = [v for v in arrays if v.aval.dtype == np.bool_]
        values = [v for v in arrays if jax.numpy.issubdtype(v.aval.dtype, np.floating)]
        return [((a, m), None) for a in values for m in masks]
    if spelling.kind == "mapped":
        return [((v,), axis) for v in arrays for axis in range(1, len(v.aval.shape) - 1)]
    return [((v,), None) for v in arrays]


def _same_literal(a, b) -> bool:
    va, vb = np.asarray(a.val), np.asarray(b.val)
    return va.dtype == vb.dtype and va.shape == vb.shape and bool(np.all(va == vb))


def _output_if_match(ref_eqns, ref_ins, ref_out, eqns, k, values, last_use):
    """The var ``eqns[k:k + len(ref_eqns)]`` computes as ``ref_out`` from ``values`` when they
    spell out ``ref_eqns`` and no other value of theirs is read elsewhere, else None."""
    if k + len(ref_eqns) > len(eqns):
        return None
    mapping = dict(zip(ref_ins, values))
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
    """``(length, input vars, output var, template eqn)`` when a spelled-out activation starts
    at ``eqns[k]``, else None."""
    first = eqns[k].primitive.name
    for index, names in _signatures():
        if names[0] != first:  # the common case: one string comparison per equation
            continue
        window = eqns[k:k + len(names)]
        if tuple(e.primitive.name for e in window) != names:
            continue
        for values, variant in _candidates(SPELLINGS[index], window[0]):
            ref_eqns, ref_ins, ref_out, template = _reference(
                index, variant, tuple(_aval(v) for v in values))
            out = _output_if_match(ref_eqns, ref_ins, ref_out, eqns, k, values, last_use)
            if out is not None:
                return len(ref_eqns), values, out, template
    return None
