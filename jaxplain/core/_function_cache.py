"""A cache of ``fn(f, *rest)`` per model function `f` that does not keep `f` alive.

``functools.lru_cache`` keyed on a model function holds it, the weights it closes over and,
through the per-function trace caches (weak dictionaries keyed by it), its traced programs,
until evicted: a function built per call (``as_function(model, variables)`` per training step,
a lambda over a checkpoint's weights) leaked tens of MB. :func:`per_function` keeps each entry
with the object whose life it follows instead, weakly:

- a function or callable object: itself, compared as ``lru_cache`` compares it (equality, so
  equal functions share an entry while one of them lives);
- a bound method (a new object on each attribute access): its ``__self__``, by identity as
  methods compare it, under its ``__func__``;
- a view of another function (a frozen dataclass compared by value with one callable field,
  such as ``ChannelsLast(f, axis)`` or ``SiteOutput(f, site)``, built anew on each call): what
  that field is kept with, under the view's type and other fields; so an equal view built on the
  next call finds the entry, which goes with `f`.

Every entry is also keyed by the `jax.config` flags that change a trace (``trace_context()``,
as the trace cache and ``jax.jit`` key theirs): a value computed without x64 is not answered
inside ``jax.enable_x64(True)``.

A callable no weak reference can hold (``__slots__`` without ``__weakref__``) is cached in a
strong LRU cache of ``maxsize_fallback`` entries, as before; an unhashable one raises
``TypeError``, as ``lru_cache`` does. Exceptions are not cached. :func:`clear_caches` empties it.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

from jaxplain.core._caches import register
from jaxplain.core._program import trace_context


class CacheInfo(NamedTuple):
    """``lru_cache``'s statistics: calls answered from the cache, calls computed, and entries
    held now (weak and strong)."""

    hits: int
    misses: int
    maxsize: int | None
    currsize: int


def per_function(*, maxsize_fallback: int = 256) -> Callable[[Callable], "PerFunction"]:
    """Decorate ``fn(f, *rest)`` to cache it per equal ``(f, *rest)`` and trace context,
    holding `f` weakly.

    Example:
      >>> import gc, weakref, jax, jax.numpy as jnp
      >>> @per_function()
      ... def out_shape(f, shape):
      ...     return jax.eval_shape(f, jax.ShapeDtypeStruct(shape, jnp.float32)).shape
      >>> f = lambda x: x.sum(-1)
      >>> out_shape(f, (2, 3))
      (2,)
      >>> ref = weakref.ref(f)
      >>> del f
      >>> _ = gc.collect()
      >>> ref() is None
      True
    """
    def decorate(fn: Callable) -> PerFunction:
        return register(PerFunction(fn, maxsize_fallback))
    return decorate


class PerFunction:
    """``fn`` cached per function (see :func:`per_function`); ``__wrapped__`` is ``fn``."""

    def __init__(self, fn: Callable, maxsize_fallback: int):
        functools.update_wrapper(self, fn)
        self._fn = fn
        # anchor (compared by equality) -> {(part of f's key, trace context, *rest): value}
        self._by_value: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # id of an anchor compared by identity -> (its table, weak reference to it)
        self._by_id: dict[int, tuple[dict, weakref.ref]] = {}
        self._held = functools.lru_cache(maxsize=maxsize_fallback)(
            lambda f, _context, *rest: fn(f, *rest))
        self._hits = self._misses = 0

    def __call__(self, f: Callable, *rest: Any) -> Any:
        table, part = self._table(f)
        context = trace_context()
        if table is None:
            return self._held(f, context, *rest)  # TypeError where f or rest is unhashable
        key = (part, context, *rest)
        if key in table:
            self._hits += 1
            return table[key]
        value = self._fn(f, *rest)
        self._misses += 1
        table[key] = value
        return value

    def _table(self, f: Callable) -> tuple[dict | None, Any]:
        """The table of `f`'s entries, held with `f`'s anchor (:func:`_split`), and `f`'s part of
        their keys; ``(None, None)`` where no weak reference can hold the anchor, or it is
        unhashable."""
        anchor, by_id, part = _split(f)
        if not by_id:
            try:
                return self._by_value.setdefault(anchor, {}), part
            except TypeError:
                return None, None
        entry = self._by_id.get(id(anchor))
        if entry is None or entry[1]() is not anchor:
            try:
                ref = weakref.ref(anchor, functools.partial(self._forget, id(anchor)))
            except TypeError:
                return None, None
            entry = self._by_id[id(anchor)] = ({}, ref)
        return entry[0], part

    def _forget(self, anchor_id: int, ref: weakref.ref) -> None:
        """Drop the entries of an identity anchor that is gone (`ref` is its reference)."""
        entry = self._by_id.get(anchor_id)
        if entry is not None and entry[1] is ref:
            del self._by_id[anchor_id]

    def cache_clear(self) -> None:
        self._by_value.clear()
        self._by_id.clear()
        self._held.cache_clear()
        self._hits = self._misses = 0

    def cache_info(self) -> CacheInfo:
        held = self._held.cache_info()
        size = sum(len(t) for t in list(self._by_value.values()))
        size += sum(len(t) for t, _ in list(self._by_id.values()))
        return CacheInfo(self._hits + held.hits, self._misses + held.misses, None,
                         size + held.currsize)


def _split(f: Any) -> tuple[Any, bool, Any]:
    """``(anchor, by identity, part)``: the object whose life `f`'s entries follow, whether it is
    compared by identity (a bound method's object) or by equality, and the rest of `f`'s key,
    which holds no strong reference to the anchor."""
    if isinstance(f, types.MethodType):
        return f.__self__, True, (types.MethodType, f.__func__)
    field = _viewed_field(f)
    if field is None:
        return f, False, None
    anchor, by_id, inner = _split(getattr(f, field))
    rest = tuple((k.name, inner if k.name == field else getattr(f, k.name))
                 for k in dataclasses.fields(f) if k.compare)
    return anchor, by_id, (type(f), rest)


def _viewed_field(f: Any) -> str | None:
    """The one callable field of `f`, a frozen dataclass compared by its fields; else None."""
    if isinstance(f, type) or not dataclasses.is_dataclass(f):
        return None
    params = type(f).__dataclass_params__
    if not (params.eq and params.frozen):
        return None
    found = [k.name for k in dataclasses.fields(f) if k.compare and callable(getattr(f, k.name))]
    return found[0] if len(found) == 1 else None
