"""The caches jaxplain keeps: one switch for all of them (:func:`clear_caches`), and the keys
that let a function written inline find its entry again (:func:`function_key`).

The methods compile once per model function and reuse the result (``jax.jit``'s convention for a
static argument), so their caches hold each function they have seen — and the weights it
closes over — until evicted. :func:`clear_caches` empties them all and ``jax.clear_caches()``:
afterwards a function that nothing else refers to is released.

Which caches: every ``functools.lru_cache`` / ``functools.cache`` at the top level of a loaded
``jaxplain`` module (found, so a new one needs no registration), every module-level
``weakref.WeakKeyDictionary`` / ``WeakValueDictionary`` (the per-function trace caches), every
module-level ``weakref.WeakSet`` (the functions already warned about: they warn again), and
anything passed to :func:`register` (a cache of another kind, e.g. a plain dict, or a
``per_function`` cache of :mod:`jaxplain.core._function_cache`, which registers itself).

Which keys: a static argument that is a function (a predicate selector, an ``intervene`` edit)
is compared by what it computes, see :func:`function_key`, so ``lambda v: v * 0.5`` written
inline in a loop (a new function object on every call) finds the program compiled for the first.
"""

from __future__ import annotations

import dataclasses
import os
import site
import sys
import sysconfig
import types
import weakref

import jax
import numpy as np

# values a function's key may hold, compared by type and repr (so 1, 1.0, True and -0.0, 0.0
# differ); immutable, so a program compiled for one is right for any equal one
_SCALARS = (type(None), bool, int, float, complex, str, bytes, np.generic)

# where installed code lives (the standard library, site-packages, jaxplain): a function defined
# there is keyed without its globals, taken as fixed (by identity, unless a closure); one defined
# elsewhere (a notebook, the user's own modules) with the globals its code reads
_INSTALLED = tuple({os.path.join(path, "") for path in (
    *(sysconfig.get_path(kind) for kind in ("stdlib", "platstdlib", "purelib", "platlib")),
    *site.getsitepackages(), os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}) + (
    "<frozen ",)

# names by which code reads a namespace with a computed name (``getattr(m, "SCALE")``,
# ``vars(m)[k]``): the names a key holds do not say what such code reads, so it has no key
_DYNAMIC = frozenset({"getattr", "vars", "globals", "locals", "__dict__", "eval", "exec",
                      "__import__", "import_module", "attrgetter", "__getattribute__"})

# how many functions and namespaces deep a key follows what a function reads
_DEPTH = 64

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
            if isinstance(value, (weakref.WeakKeyDictionary, weakref.WeakValueDictionary,
                                  weakref.WeakSet)):
                caches.append(value)
            elif (callable(getattr(value, "cache_clear", None)) and hasattr(value, "cache_info")
                  and not isinstance(value, type)  # a cache's class, not a cache
                  and str(getattr(value, "__module__", "")).startswith("jaxplain")):
                caches.append(value)
    return caches


def clear_caches() -> None:
    """Empty every jaxplain cache and JAX's own (``jax.clear_caches()``).

    The methods keep, per model function, its traced program and its compiled programs, so a
    second call is fast; they hold the function (and the weights it closes over) until evicted.
    Call this after explaining many short-lived functions, e.g. one ``as_function(model,
    variables)`` per checkpoint, to release them; the next call of any method compiles again,
    and a function warned about once (e.g. ``ChangedWeightsWarning``) is warned about again.

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
    values, defaults, attributes and read globals, when all of those are immutable values
    (numbers, strings, tuples and frozensets of them, frozen dataclasses by their fields,
    functions keyed the same way, JAX arrays by identity) or modules and classes (keyed by the
    attributes the code may read of them: ``cfg.scale`` rebound is another key); else `fn`
    itself, equal only to itself.

    A function it reaches (read as a global, closed over, or an attribute of a module or class:
    ``helpers.scaled``, a staticmethod) is keyed the same way, with what it reads in turn; the
    globals of installed code (the standard library, site-packages, jaxplain) are taken as fixed.
    A function whose code reads names by a computed name (``getattr``, ``vars``, ``globals``,
    ``eval``, ...) has no key.

    So an inline ``lambda v: v * 0.5``, a new object on every call, keys a compile cache as the
    first one did (it recompiled on every call: 180 ms each on a small CNN), while
    ``lambda v: v * scale`` with another ``scale``, ``lambda v: helpers.scaled(v)`` after
    ``helpers.SCALE`` is rebound, or one that reads an array (which cannot be compared
    cheaply), never reuses a program compiled for another.
    """
    if not isinstance(fn, types.FunctionType):
        return fn
    try:
        key = _Keys().key(fn)
        hash(key)
    except (TypeError, ValueError):  # a mutable or unhashable value, or an empty cell
        return fn
    return SameFunction(fn, key)


class _Keys:
    """The key of what one function reads, as a graph: each function and namespace it reaches is
    keyed once, as a node, and referred to by its place in the order reached, so one reached
    again (recursion, methods that call each other, a module that holds itself) costs a
    reference, and the key's size and hashing grow with the number of nodes, not of paths."""

    def __init__(self):
        self.places: dict = {}  # (id, names) of a function or namespace -> its place in nodes
        self.nodes: list = []  # the key of each, in the order reached
        self.depth = 0  # how many are being keyed now, one inside another

    def key(self, fn: types.FunctionType):
        """`fn`'s key: its node (or its identity, for installed code) and every node reached."""
        return self.value(fn), tuple(self.nodes)

    def _node(self, mark, make):
        """A reference to the node `mark` names; `make()` gives its key the first time."""
        if mark not in self.places:
            if self.depth >= _DEPTH:
                raise TypeError(f"reads functions and namespaces more than {_DEPTH} deep")
            self.places[mark] = len(self.nodes)
            self.nodes.append(None)
            self.depth += 1
            self.nodes[self.places[mark]] = make()
            self.depth -= 1
        return "node", self.places[mark]  # no other value's key is a tuple starting with a str

    def function(self, fn: types.FunctionType):
        """`fn`'s code, closed-over values, defaults, attributes (``fn.k = 5``, which its code may
        read) and the globals its code reads (none for installed code, whose globals are taken
        as fixed)."""
        names = frozenset() if _installed(fn) else _global_names(fn.__code__)
        if names & _DYNAMIC:
            raise TypeError(f"reads names it computes: {', '.join(sorted(names & _DYNAMIC))}")

        def key(value):
            if isinstance(value, (types.ModuleType, type)):
                return self.namespace(value, names)
            return self.value(value)

        reads = tuple((name, key(fn.__globals__[name]))
                      for name in sorted(names) if name in fn.__globals__)
        cells = tuple(key(cell.cell_contents) for cell in fn.__closure__ or ())
        keywords = tuple((k, key(v)) for k, v in sorted((fn.__kwdefaults__ or {}).items()))
        attributes = tuple((k, key(v)) for k, v in sorted(vars(fn).items()))
        return fn.__code__, cells, self.value(fn.__defaults__ or ()), keywords, attributes, reads

    def namespace(self, space, names: frozenset):
        """A module or class read by a function, with the attributes among `names` (every name
        the function's code uses) that it holds: numbers, strings and tuples by value, functions
        (and static and class methods) by their keys, a class's with what they read of the class
        (through ``cls`` or ``self``), modules and classes again, anything else by identity (a
        rebound attribute is another key; one changed in place, e.g. a dict, is not)."""
        return self._node((id(space), names), lambda: (space, self._attributes(space, names)))

    def _attributes(self, space, names: frozenset) -> tuple:
        owners = [vars(space)] if isinstance(space, types.ModuleType) else [
            vars(k) for k in space.__mro__]  # found statically: no __getattr__ hook runs
        attributes = []
        for name in sorted(names):
            owner = next((o for o in owners if name in o), None)
            if owner is None:
                continue
            value = owner[name]
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if isinstance(value, (types.ModuleType, type)):
                attributes.append((name, self.namespace(value, names)))
            elif isinstance(value, types.FunctionType) and isinstance(space, type) and not (
                    _installed(value)):
                attributes.append((name, self.value(value), self.namespace(
                    space, _global_names(value.__code__))))
            elif isinstance(value, _SCALARS + (tuple, frozenset, types.FunctionType)):
                attributes.append((name, self.value(value)))
            else:  # an array, a property, a callable object: by identity
                attributes.append((name, _Identity(value)))
        return tuple(attributes)

    def value(self, value):
        """`value` as a part of a function's key; TypeError for one that may change or be
        traced."""
        if isinstance(value, types.FunctionType):
            if _installed(value) and value.__closure__ is None:
                return _Identity(value)  # nothing of it may differ from a copy
            return self._node((id(value), None), lambda: self.function(value))
        if isinstance(value, types.BuiltinFunctionType):
            return value
        if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
            return _Identity(value)  # immutable: another array (a global rebound) is another key
        if isinstance(value, _SCALARS):
            return type(value), repr(value)
        if isinstance(value, tuple):
            return tuple, tuple(self.value(v) for v in value)
        if isinstance(value, frozenset):
            return frozenset, frozenset(self.value(v) for v in value)
        if (dataclasses.is_dataclass(value) and not isinstance(value, type)
                and type(value).__dataclass_params__.frozen):
            # by its fields' keys, not its ``==`` (0.0 == -0.0, 1 == True, a function field
            # whose globals changed), compare=False ones included: they may change the result
            return type(value), self._node((id(value), None), lambda: tuple(
                (k.name, self.value(getattr(value, k.name))) for k in dataclasses.fields(value)))
        raise TypeError(f"not an immutable value: {type(value).__name__}")


class _Identity:
    """A value compared by identity, held so that its id is not reused while a key holds it."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, _Identity) and self.value is other.value

    def __hash__(self):
        return id(self.value)


def _global_names(code: types.CodeType) -> frozenset:
    """The names `code` may read as globals or attributes, its nested functions' included."""
    names = frozenset(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _installed(fn: types.FunctionType) -> bool:
    """Whether `fn` is defined in installed code (see ``_INSTALLED``)."""
    return fn.__code__.co_filename.startswith(_INSTALLED)
