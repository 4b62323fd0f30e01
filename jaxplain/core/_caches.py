"""The caches jaxplain keeps: one switch for all of them (:func:`clear_caches`), and the keys
that let a function written inline find its entry again (:func:`function_key`).

The methods compile once per model function and reuse the result (``jax.jit``'s convention for a
static argument), so their caches hold each function they have seen — and the weights it
closes over — until evicted. :func:`clear_caches` empties them all and ``jax.clear_caches()``:
afterwards a function that nothing else refers to is released.

Which caches: every ``functools.lru_cache`` / ``functools.cache`` at the top level of a loaded
``jaxplain`` module (found, so a new one needs no registration), every module-level
``weakref.WeakKeyDictionary`` / ``WeakValueDictionary`` (the per-function trace caches), and
anything passed to :func:`register` (a cache of another kind, e.g. a plain dict).

Which keys: a static argument that is a function (a predicate selector, an ``intervene`` edit)
is compared by what it computes, see :func:`function_key`, so ``lambda v: v * 0.5`` written
inline in a loop (a new function object on every call) finds the program compiled for the first.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import weakref

import jax
import numpy as np

# values a function's key may hold, compared by type and repr (so 1, 1.0, True and -0.0, 0.0
# differ); immutable, so a program compiled for one is right for any equal one
_SCALARS = (type(None), bool, int, float, complex, str, bytes, np.generic)

_REGISTERED: list = []


def register(cache):
    """Have :func:`clear_caches` empty `cache` (anything with ``clear()`` or
    ``cache_clear()``); returns it, so it can wrap a definition."""
    _REGISTERED.append(cache)
    return cache


def _found() -> list:
    caches = []
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "jaxplain" or name.startswith("jaxplain.")):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, (weakref.WeakKeyDictionary, weakref.WeakValueDictionary)):
                caches.append(value)
            elif (callable(getattr(value, "cache_clear", None)) and hasattr(value, "cache_info")
                  and str(getattr(value, "__module__", "")).startswith("jaxplain")):
                caches.append(value)
    return caches


def clear_caches() -> None:
    """Empty every jaxplain cache and JAX's own (``jax.clear_caches()``).

    The methods keep, per model function, its traced program and its compiled programs, so a
    second call is fast; they hold the function (and the weights it closes over) until evicted.
    Call this after explaining many short-lived functions, e.g. one ``as_function(model,
    variables)`` per checkpoint, to release them; the next call of any method compiles again.

    Example:
      >>> import gc, weakref, jax.numpy as jnp, jaxplain as jp
      >>> f = lambda x: jnp.tanh(x) * 2.0
      >>> _ = jp.capture(f, "tanh")(jnp.ones((2, 3)))
      >>> ref = weakref.ref(f)
      >>> del f
      >>> jp.clear_caches()
      >>> _ = gc.collect()
      >>> ref() is None
      True
    """
    seen: set[int] = set()
    for cache in _found() + _REGISTERED:
        if id(cache) in seen:
            continue
        seen.add(id(cache))
        clear = getattr(cache, "cache_clear", None) or getattr(cache, "clear")
        clear()
    jax.clear_caches()


class SameFunction:
    """A function compared by what it computes (see :func:`function_key`); calls go to it."""

    __slots__ = ("fn", "key")

    def __init__(self, fn: types.FunctionType, key):
        self.fn, self.key = fn, key

    def __call__(self, *args):
        return self.fn(*args)

    def __eq__(self, other):
        return isinstance(other, SameFunction) and self.key == other.key

    def __hash__(self):
        return hash(self.key)

    def __repr__(self):
        return repr(self.fn)


def function_key(fn):
    """`fn` as a :class:`SameFunction`, equal to another function with the same code, closed-over
    values, defaults and read globals, when all of those are immutable values (numbers, strings,
    tuples and frozensets of them, frozen dataclasses, functions keyed the same way, JAX arrays
    by identity) or modules and classes (keyed by the attributes the code may read of them: ``cfg.scale``
    rebound is another key); else `fn` itself, equal only to itself.

    So an inline ``lambda v: v * 0.5``, a new object on every call, keys a compile cache as the
    first one did (it recompiled on every call: 180 ms each on a small CNN), while
    ``lambda v: v * scale`` with another ``scale``, or one that reads an array (which cannot be
    compared cheaply), never reuses a program compiled for another.
    """
    if not isinstance(fn, types.FunctionType):
        return fn
    try:
        key = _function_key(fn, frozenset())
        hash(key)
    except (TypeError, ValueError):  # a mutable or unhashable value, or an empty cell
        return fn
    return SameFunction(fn, key)


def _function_key(fn: types.FunctionType, seen: frozenset):
    if id(fn) in seen:  # a function that reads itself (recursion)
        return fn.__code__
    seen = seen | {id(fn)}
    names = _global_names(fn.__code__)

    def key(value):
        if isinstance(value, (types.ModuleType, type)):
            return _namespace_key(value, names, seen)
        return _value_key(value, seen)

    reads = tuple((name, key(fn.__globals__[name]))
                  for name in sorted(names) if name in fn.__globals__)
    cells = tuple(key(cell.cell_contents) for cell in fn.__closure__ or ())
    keywords = tuple((k, key(v)) for k, v in sorted((fn.__kwdefaults__ or {}).items()))
    return fn.__code__, cells, _value_key(fn.__defaults__ or (), seen), keywords, reads


def _namespace_key(space, names: set, seen: frozenset):
    """A module or class read by a function, with the attributes among `names` (every name the
    function's code uses) that it holds: numbers, strings and tuples by value, modules and classes
    again, anything else by identity (a rebound attribute is another key; one changed in place,
    e.g. a dict, is not)."""
    if id(space) in seen:
        return space
    seen = seen | {id(space)}
    owners = [vars(space)] if isinstance(space, types.ModuleType) else [
        vars(k) for k in space.__mro__]  # found statically: no __getattr__ hook runs
    attributes = []
    for name in sorted(names):
        owner = next((o for o in owners if name in o), None)
        if owner is None:
            continue
        value = owner[name]
        if isinstance(value, (types.ModuleType, type)):
            attributes.append((name, _namespace_key(value, names, seen)))
        elif isinstance(value, _SCALARS + (tuple, frozenset)):
            attributes.append((name, _value_key(value, seen)))
        else:  # a function, an array, a property: by identity, as the space itself was before
            attributes.append((name, _Identity(value)))
    return space, tuple(attributes)


class _Identity:
    """A value compared by identity, held so that its id is not reused while a key holds it."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, _Identity) and self.value is other.value

    def __hash__(self):
        return id(self.value)


def _global_names(code: types.CodeType) -> set:
    """The names `code` may read as globals, its nested functions' included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _value_key(value, seen: frozenset):
    """`value` as a part of a function's key; TypeError for one that may change or be traced."""
    if isinstance(value, types.FunctionType):
        return _function_key(value, seen)
    if isinstance(value, types.BuiltinFunctionType):
        return value
    if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
        return _Identity(value)  # immutable: another array (a global rebound) is another key
    if isinstance(value, _SCALARS):
        return type(value), repr(value)
    if isinstance(value, tuple):
        return tuple, tuple(_value_key(v, seen) for v in value)
    if isinstance(value, frozenset):
        return frozenset, frozenset(_value_key(v, seen) for v in value)
    if dataclasses.is_dataclass(value) and type(value).__dataclass_params__.frozen:
        hash(value)  # TypeError when it holds an array
        return type(value), value
    raise TypeError(f"not an immutable value: {type(value).__name__}")
