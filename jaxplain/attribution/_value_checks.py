"""Checks of concrete arrays' values (no NaN, finite, class indices in range), many run with one
read-back, and arrays found to pass remembered so that they are not read again.

Every read of a device array's values makes the host wait for the device's queue: the checks of
a call are gathered (:class:`Check`) and run together (:func:`run_checks`).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple, no_type_check

import jax
import jax.numpy as jnp
import numpy as np


def is_traced(value: Any) -> bool:
    """True when `value` is a JAX tracer (its concrete values are unknown)."""
    return isinstance(value, jax.core.Tracer)


#: Up to this many elements, a concrete array in the host's memory is checked with NumPy: no
#: dispatch, and no wait for XLA's threads to wake (the device sum and the wait cost a tiny
#: MLP's gradient about 35 us a call); a larger one, or one on an accelerator, on the device.
HOST_CHECK_SIZE = 1 << 18


class Check(NamedTuple):
    """A check of a concrete array's values, run by :func:`run_checks`.

    `kind` is ``"nan"`` (no NaN: one sum, NaN where `value` holds one, or +inf and -inf, and
    the rows only then), ``"finite"`` (no NaN or inf) or ``"range"`` (integers in ``[0,
    classes)``). `error` makes the error from what was found: the bad rows (a NumPy index
    array) for ``"nan"`` and ``"finite"``, ``(min, max)`` for ``"range"``. `alias`, an array
    holding `value`'s values (its int32 copy), passes with it.
    """

    kind: str
    value: Any
    error: Callable[[Any], Exception]
    classes: int = 0
    alias: Any = None


class _Found(weakref.ref):
    """A weak reference to a concrete JAX array, holding what the checks found of it:
    ``{"finite": True}``, ``{"nan": True}`` (no NaN), ``{"range": (min, max)}``."""

    __slots__ = ("key", "facts")


#: id -> :class:`_Found`, for arrays found to pass (JAX arrays are immutable). An entry goes
#: with its array. The same array checked again (by a metric after the method that made its
#: map; by every metric of :func:`jaxplain.metrics.compare`) is not read again.
_FOUND: dict[int, _Found] = {}


@no_type_check  # a finalizer may run at exit, after a type checker's modules are torn down
def _forget(ref: _Found) -> None:
    if _FOUND.get(ref.key) is ref:
        del _FOUND[ref.key]


def _found(a: Any) -> dict[str, Any]:
    ref = _FOUND.get(id(a))
    return ref.facts if ref is not None and ref() is a else {}


def _learn(a: Any, facts: dict[str, Any]) -> None:
    if not facts or not isinstance(a, jax.Array) or is_traced(a):
        return  # a NumPy array can change; a tracer holds no values
    ref = _FOUND.get(id(a))
    if ref is None or ref() is not a:
        ref = _FOUND[id(a)] = _Found(a, _forget)
        ref.key, ref.facts = id(a), {}
    ref.facts.update(facts)


def _pending(c: Check) -> bool:
    """Whether `c`'s array must be read: concrete, not empty, of the kind's dtype, not found
    to pass before."""
    a = c.value
    if is_traced(a) or not a.size:
        return False
    known = _found(a)
    if c.kind == "range":
        return "range" not in known
    return jnp.issubdtype(a.dtype, jnp.floating) and not (
        known.get("finite") or (c.kind == "nan" and known.get("nan")))


def _summary(kind: str, a: Any, xp: Any) -> Any:
    """One pass over `a` for a check of `kind`, with NumPy or jax.numpy (`xp`)."""
    if kind == "nan":
        return xp.isnan(a.sum())
    if kind == "finite":
        return ~xp.isfinite(a).all()
    return a.min(), a.max()


def _rows(kind: str, a: Any, xp: Any) -> Any:
    """``(batch,)``: the examples of `a` that fail a ``"nan"`` or ``"finite"`` check."""
    rows = a.reshape(a.shape[0], -1)
    return (xp.isnan(rows) if kind == "nan" else ~xp.isfinite(rows)).any(axis=1)


@functools.partial(jax.jit, static_argnames="kinds")
def _summaries(values: tuple, kinds: tuple[str, ...]) -> tuple:
    return tuple(_summary(k, a, jnp) for k, a in zip(kinds, values))


@functools.partial(jax.jit, static_argnames="kind")
def _device_rows(a: jax.Array, kind: str) -> jax.Array:
    return _rows(kind, a, jnp)


def _on_host(x: Any) -> bool:
    """Whether `x` is a NumPy array or a JAX array held whole in the host's memory (CPU)."""
    return isinstance(x, np.ndarray) or _host_sharding(x.sharding)


@functools.lru_cache(maxsize=64)
def _host_sharding(sharding: jax.sharding.Sharding) -> bool:
    return sharding.is_fully_addressable and all(d.platform == "cpu"
                                                 for d in sharding.device_set)


def _host_summary(c: Check) -> Any:
    a = np.asarray(c.value)
    if c.kind != "nan":
        return _summary(c.kind, a, np)
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf is NaN here, silently
        return _summary(c.kind, a, np)


def run_checks(*checks: Check | None) -> None:
    """Run `checks` in order (None: nothing to check), raising the error of the first that
    fails.

    Tracers (arguments of the user's ``jit`` or ``vmap``), empty arrays and arrays found to
    pass before are skipped; a closed-over array inside the user's ``jit`` is concrete and
    checked. Arrays of at most :data:`HOST_CHECK_SIZE` elements in the host's memory are
    checked with NumPy; the others in one compiled call, whose few scalars are read back with
    one ``jax.device_get``: on an accelerator one wait for the device, however many checks
    (the bad rows are looked for only when a check fails).
    """
    todo, device = [], []  # todo: (check, its NumPy summary or None: read from the device)
    for c in checks:
        if c is None:
            continue
        if not _pending(c):
            if c.kind == "range" and not is_traced(c.value) and c.value.size:
                low, high = _found(c.value)["range"]  # known, but for this many classes?
                if low < 0 or high >= c.classes:
                    raise c.error((low, high))
            if c.alias is not None and not is_traced(c.value):
                _learn(c.alias, _found(c.value))
        elif c.value.size <= HOST_CHECK_SIZE and _on_host(c.value):
            todo.append((c, _host_summary(c)))
        else:
            todo.append((c, None))
            device.append(c)
    if device:
        with jax.ensure_compile_time_eval():  # a closed-over array inside the user's jit
            read = iter(jax.device_get(_summaries(tuple(c.value for c in device),
                                                  tuple(c.kind for c in device))))
    for c, found in todo:
        on_device = found is None
        if on_device:
            found = next(read)
        if c.kind == "range":
            facts = {"range": (int(found[0]), int(found[1]))}
            if facts["range"][0] < 0 or facts["range"][1] >= c.classes:
                raise c.error(facts["range"])
        elif found:
            with jax.ensure_compile_time_eval():
                rows = (_device_rows(c.value, c.kind) if on_device else
                        _rows(c.kind, np.asarray(c.value), np))
            bad = np.flatnonzero(np.asarray(rows))
            if bad.size:
                raise c.error(bad)
            facts = {"nan": True}  # +inf and -inf summed to NaN: infinities pass
        else:
            facts = {c.kind: True}
        _learn(c.value, facts)
        _learn(c.alias, facts)


def nan_check(x: Any, name: str = "x") -> Check:
    """:func:`check_no_nan` of `x`, as a :class:`Check` to run with others."""
    def error(bad):
        shown = bad[:8].tolist() + (["..."] if bad.size > 8 else [])
        return ValueError(f"{name} contains NaN (examples {shown} of {x.shape[0]}): the model's "
                          "outputs there are NaN and no attribution of them means anything. "
                          "Clean or drop those inputs.")
    return Check("nan", x, error)


def check_no_nan(x: jax.Array, name: str = "x") -> None:
    """A ValueError naming the examples when a concrete floating `x` ``(batch, ...)`` holds
    NaN (as the metrics refuse it): the model's outputs there are NaN, and its maps NaN or,
    through a ReLU's zero gradient, finite and meaningless. The cost is one sum (the examples
    are looked for only when it is NaN), with NumPy or on the device as :func:`run_checks`
    says.

    A tracer (`x` an argument of the user's ``jit`` or ``vmap``) cannot be checked and passes;
    an array closed over by a jitted function is concrete and checked."""
    run_checks(nan_check(x, name))
