"""A method on a model rebuilt from new weights, compiled once per model structure.

The randomization checks explain one model with many sets of weights. A function rebuilt from
each set (``as_function`` of new variables) is a new static argument to every jitted method,
which compiles again for each state, on every call. Here the model's arrays (variables, module
fields, NNX state, the new leaves) are the *arguments* of one jitted program, which rebuilds
the function inside the trace and calls the method there; what stays fixed (the module, the
tree structure, non-array fields, the method, its options) is the program's static key. A
second call with the same model structure, method and shapes compiles nothing. The original
model's prediction (:func:`predict`) and a Linen model's default fresh weights (:func:`init`)
are compiled the same way, and :func:`structure` keys what a trace of the model tells on that
structure.

The model's code is part of every key (:func:`code_key`): the functions its classes run and the
globals they read, compared by :func:`jaxplain.core._caches.function_key`, so a notebook helper
or global redefined gives a new program; a model whose code cannot be keyed (it reads a mutable
global, or names it computes) is not cached at all (:class:`Uncached`).

A ``functools.partial`` method is opened up: its PRNG keys and NumPy arrays are arguments too (a
new key per call, or a baseline edited in place, reuses the program with the new values); its
other options are static, compared by value (or by identity when unhashable, e.g. a JAX
array), as ``jax.jit`` compares static arguments.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
from collections.abc import Sequence
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from jaxplain.core._caches import SameFunction, _global_names, _installed, function_key
from jaxplain.metrics._checks import is_concrete
from jaxplain.metrics._weights import model_kind, model_weights

_TRACED = object()  # in a static key, where an argument of the program goes


class Uncached(Exception):
    """The model's code cannot be keyed (:func:`code_key`): call it as it is, uncached."""


def _modules(model: Any, kind: str) -> list:
    """`model` and the modules below it: Linen and Equinox dataclass fields (in lists, tuples and
    dicts too), NNX graph nodes."""
    if kind == "nnx":
        from flax import nnx

        return [node for _, node in nnx.iter_graph(model) if isinstance(node, nnx.Module)]
    found, seen, stack = [], set(), [model]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, (list, tuple)):
            stack.extend(node)
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif dataclasses.is_dataclass(node) and not isinstance(node, type):
            found.append(node)
            stack.extend(getattr(node, f.name, None) for f in dataclasses.fields(node)
                         if f.name not in ("parent", "name"))  # Linen's link up, a string
    return found


def _module_base(kind: str) -> type:
    if kind == "linen":
        import flax.linen as nn

        return nn.Module
    if kind == "equinox":
        import equinox as eqx

        return eqx.Module
    from flax import nnx

    return nnx.Module


def _method(cls: type, name: str) -> Callable | None:
    """The function `cls` runs as ``self.<name>``, below Flax's and ``functools.wraps``'
    wrappers (a property's getter, a static or class method's function)."""
    for klass in cls.__mro__:
        if name in vars(klass):
            value = vars(klass)[name]
            value = getattr(value, "__func__", getattr(value, "fget", value))
            return inspect.unwrap(value) if callable(value) else None
    return None


def code_key(model: Any, kind: str) -> tuple | None:
    """A hashable key of the code a call of `model` runs, ``None`` where it cannot be keyed.

    For each module class reached (the model's, its sub-modules', and a module class its code
    names, such as a Linen block built inside ``@nn.compact``): the
    :func:`~jaxplain.core._caches.function_key` of its ``__call__`` (Linen's ``setup`` too) and
    of the methods these call through ``self``, which follows the helpers and globals they
    read. Installed classes (Flax's, Equinox's layers) are keyed by identity."""
    base = _module_base(kind)
    classes = list(dict.fromkeys(type(m) for m in _modules(model, kind)))
    keys = []
    for cls in classes:
        names, seen = ["__call__"] + (["setup"] if kind == "linen" else []), set()
        while names:
            name = names.pop()
            fn = None if name in seen else _method(cls, name)
            seen.add(name)
            if fn is None:
                continue
            key = function_key(fn)
            if not isinstance(key, SameFunction):
                return None
            keys.append((cls, name, key))
            if not isinstance(fn, types.FunctionType) or _installed(fn):  # fixed code
                continue
            read = _global_names(fn.__code__)
            names.extend(read)
            for g in read:  # a module class the code builds: its code too
                value = fn.__globals__.get(g)
                if isinstance(value, type) and issubclass(value, base) and value not in classes:
                    classes.append(value)
    return tuple(keys)


@dataclasses.dataclass(frozen=True, eq=False)
class _Same:
    """An unhashable static leaf, equal only to itself (as ``jax.jit`` treats such values)."""

    value: Any

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.value is self.value


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return _Same(value)
    return value


@dataclasses.dataclass(frozen=True)
class _Static:
    """A pytree with its traced leaves taken out: the structure and the other leaves."""

    treedef: Any
    leaves: tuple


def _split(tree: Any, traced: Callable[[Any], bool]) -> tuple[list, _Static]:
    """``(traced leaves, static rest)`` of `tree`."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    static = tuple(_TRACED if traced(v) else _hashable(v) for v in leaves)
    return [v for v in leaves if traced(v)], _Static(_hashable(treedef), static)


def _join(static: _Static, traced: list) -> Any:
    """The pytree that :func:`_split` took apart."""
    it = iter(traced)
    leaves = [next(it) if v is _TRACED else v.value if isinstance(v, _Same) else v
              for v in static.leaves]
    treedef = static.treedef.value if isinstance(static.treedef, _Same) else static.treedef
    return treedef.unflatten(leaves)


def _is_array(v: Any) -> bool:
    return isinstance(v, (jax.Array, np.ndarray))


def _is_traced_option(v: Any) -> bool:
    """A method's leaf passed as an argument: a PRNG key (a new one reuses the program) or a
    NumPy array (mutable: baked in as a constant, an edit in place would not be seen)."""
    return isinstance(v, np.ndarray) or (
        isinstance(v, jax.Array) and jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key))


def _method_tree(method: Callable) -> Any:
    """A ``functools.partial`` as a pytree (``jax.tree_util.Partial``); other methods as they
    are (a leaf, or a pytree already)."""
    if isinstance(method, functools.partial) and not isinstance(method, jax.tree_util.Partial):
        return jax.tree_util.Partial(method.func, *method.args, **method.keywords)
    return method


def _model_split(model: Any, variables: Any, apply_kwargs: dict[str, Any],
                 leaves: Any) -> tuple[list, _Static]:
    """``(arrays, static rest)`` of the model rebuilt from `leaves` (:func:`_rebuilt`), its code
    in the static rest (:func:`code_key`); raises :class:`Uncached` where that has no key."""
    kind = model_kind(model)
    code = code_key(model, kind)
    if code is None:
        raise Uncached
    parts = model
    if kind == "nnx":
        from flax import nnx

        parts = nnx.split(model)
    return _split((kind, code, parts, variables, apply_kwargs, list(leaves)), _is_array)


def _rebuilt(model_static: _Static, model_arrays: list) -> Callable:
    """The function of the model that :func:`_model_split` took apart (inside a trace, of its
    traced arrays)."""
    kind, _, parts, variables, apply_kwargs, leaves = _join(model_static, model_arrays)
    if kind == "nnx":
        from flax import nnx

        parts = nnx.merge(*parts)
    return model_weights(parts, variables, apply_kwargs).rebuild(leaves)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _program(model_static: _Static, method_static: _Static, model_arrays: list,
             method_arrays: list, x: Array, target: Array) -> Array:
    """The method on the model rebuilt, inside the trace, from the traced arrays."""
    return _join(method_static, method_arrays)(_rebuilt(model_static, model_arrays), x, target)


@functools.partial(jax.jit, static_argnums=0)
def _prediction(model_static: _Static, model_arrays: list, x: Array) -> Array:
    return jnp.argmax(_rebuilt(model_static, model_arrays)(x), axis=-1)


@functools.partial(jax.jit, static_argnums=0)
def _init(static: _Static, arrays: list, key: Array, x: Array) -> Any:
    model, _, apply_kwargs = _join(static, arrays)
    return model.init(key, x, **apply_kwargs)


def explain(
    model: Any,
    variables: Any,
    apply_kwargs: dict[str, Any],
    method: Callable[..., Array],
    leaves: Sequence[Any],
    x: Float[Array, "batch *feature"],
    target: Int[Array, " batch"],
) -> Float[Array, "batch *feature"]:
    """``method(f, x, target)`` for ``f = model_weights(model, variables,
    apply_kwargs).rebuild(leaves)``, by one compiled program per model structure, method and
    shapes (the arrays of `model`, `variables`, `apply_kwargs` and `leaves` are traced).

    Raises what tracing the method raises: a ``jax.errors.JAXTypeError`` for a method that JAX
    cannot trace (one written in NumPy), which the caller may then call as it is, as it does
    on :class:`Uncached` (a model whose code has no key).
    """
    model_arrays, model_static = _model_split(model, variables, apply_kwargs, leaves)
    method_arrays, method_static = _split(_method_tree(method), _is_traced_option)
    return _program(model_static, method_static, model_arrays, method_arrays, x, target)


def predict(model: Any, variables: Any, apply_kwargs: dict[str, Any], leaves: Sequence[Any],
            x: Float[Array, "batch *feature"]) -> Int[Array, " batch"]:
    """``argmax(f(x), axis=-1)``, the class `f` (as in :func:`explain`) predicts for each
    example, by one compiled program per model structure and shapes; raises a
    ``jax.errors.JAXTypeError`` for a model that JAX cannot trace with its arrays as
    arguments, :class:`Uncached` for one whose code has no key."""
    model_arrays, model_static = _model_split(model, variables, apply_kwargs, leaves)
    return _prediction(model_static, model_arrays, x)


def init(model: Any, key: Array, x: Float[Array, "1 *feature"],
         apply_kwargs: dict[str, Any]) -> Any:
    """``model.init(key, x, **apply_kwargs)`` of a Flax Linen `model`, compiled once per model,
    code (:func:`code_key`), options and shapes (the same values as the eager call: the same
    random draws); raises a ``jax.errors.JAXTypeError`` for a model that JAX cannot trace,
    :class:`Uncached` for one whose code has no key."""
    code = code_key(model, "linen")
    if code is None:
        raise Uncached
    arrays, static = _split((model, code, apply_kwargs), _is_array)
    return _init(static, arrays, key, x)


def structure(model: Any, variables: Any, apply_kwargs: dict[str, Any], leaves: Sequence[Any],
              x: Float[Array, "batch *feature"]) -> Any:
    """A hashable key of everything a trace of the model rebuilt from `leaves` on `x` depends
    on but the values of its arrays: :func:`explain`'s static key (the model's code included),
    the shape and dtype of each array and of `x`, and the ``jax.config`` flags that change a
    trace; ``None`` for a model whose code has no key (:class:`Uncached`)."""
    from jaxplain.core._program import trace_context

    try:
        arrays, static = _model_split(model, variables, apply_kwargs, leaves)
    except Uncached:
        return None
    avals = tuple((np.shape(a), np.dtype(a.dtype), getattr(a, "weak_type", False))
                  for a in [*arrays, x])
    return static, avals, trace_context()


def place_like(new: Any, old: Any) -> Any:
    """`new` on the devices of `old` when `old` is committed to them (e.g. restored from a
    checkpoint), else as it is (a tracer too): jit compiles once per placement of its
    arguments, so weights placed as the ones they replace keep every state on the original's
    program."""
    if isinstance(old, jax.Array) and is_concrete(old) and old.committed:
        return jax.device_put(new, old.sharding)
    return new
