"""Noticing weights that change under a cached trace: a function traced again at a new input
shape is compared with what it closed over when first traced (:class:`ChangedWeightsWarning`)."""

from __future__ import annotations

import hashlib
import warnings
import weakref
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.core._user_line import user_stacklevel

# f -> {trace context: what f closed over when first traced under it (see _fingerprint)}
_FIRST: "weakref.WeakKeyDictionary[Callable, dict]" = weakref.WeakKeyDictionary()
# functions already warned about with ChangedWeightsWarning
_WARNED: "weakref.WeakSet[Callable]" = weakref.WeakSet()


class ChangedWeightsWarning(UserWarning):
    """The model function read other weights when traced at a new input shape than when it was
    first traced (weights changed in place): a call can mix old and new weights. Filter it by
    this category."""

    def __init__(self, message: str = (
            "The model function reads weights that changed since it was first traced (the "
            "arrays it closes over hold other values now, e.g. a dict of parameters updated in "
            "place by training). Like jax.jit, jaxplain keeps one trace of a function per input "
            "shape and dtype, with the weights it read then, so the results can mix old and new "
            "weights: a call that traces the function at a new shape (integrated gradients and "
            "the sampling methods evaluate it on a larger batch) uses the new weights there and "
            "the old ones where its shape was traced before, matching neither model. For new "
            "weights, build a new function (jaxplain.as_function(model, new_variables), "
            "functools.partial(apply, new_params)), pass the weights as an argument of your own "
            "jax.jit, or call jaxplain.clear_caches() after each update.")):
        super().__init__(message)



def check_weights(f: Callable, context: tuple, consts: tuple) -> None:
    """Keep what `f` closed over when first traced under `context`; at a later trace, warn
    once per function when that changed (:class:`ChangedWeightsWarning`)."""
    first = _FIRST.setdefault(f, {})
    now = _fingerprint(consts)
    if context not in first:
        first[context] = now
    elif f not in _WARNED and _changed(first[context], now):
        _WARNED.add(f)
        warnings.warn(ChangedWeightsWarning(), stacklevel=user_stacklevel())


def _fingerprint(consts: tuple) -> tuple:
    """``(shape, dtype, value)`` of each constant of a program, in trace order; the value is a
    JAX array itself (immutable), or a digest of a NumPy array's bytes now (the array may be
    the caller's, changed in place later)."""
    return tuple((np.shape(c), c.dtype, c if isinstance(c, jax.Array) else _digest(c))
                 for c in consts)


def _digest(value) -> bytes:
    """A digest of the bytes of `value` (a NumPy array, or a JAX array read to the host), or
    `value` itself when it is one."""
    if isinstance(value, bytes):
        return value
    if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
        value = jax.random.key_data(value)
    # as bytes: an ml_dtypes array (bfloat16) exports no buffer
    return hashlib.blake2b(np.ascontiguousarray(value).view(np.uint8).data,
                           digest_size=16).digest()


def _changed(old: tuple, new: tuple) -> bool:
    """Whether the constants `new` (a :func:`_fingerprint`), traced from the same function as
    `old` at another input shape, hold other values: another number of them, or a pair of one
    shape and dtype whose values differ. Pairs of other shapes are made for the input's shape
    (``np.arange(x.shape[0])``), so are not compared. The same JAX array costs nothing, NumPy
    arrays compare by digest, other JAX arrays on their device with one read for all. A JAX
    array deleted since (donated to a training step that replaced it) held other weights."""
    if len(old) != len(new):
        return True
    on_device = []
    for (shape, dtype, u), (shape_v, dtype_v, v) in zip(old, new):
        if u is v or shape != shape_v or dtype != dtype_v:
            continue
        if is_deleted(u) or is_deleted(v):
            return True
        if isinstance(u, jax.Array) and isinstance(v, jax.Array):
            on_device.append(_equal_on_device(u, v))
        elif _digest(u) != _digest(v):
            return True
    return bool(on_device) and not bool(jnp.all(jnp.stack(on_device)))


def _equal_on_device(u: jax.Array, v: jax.Array) -> jax.Array:
    """``u == v`` everywhere (NaNs equal, keys by their data), computed where `u` is held."""
    v = jax.device_put(v, u.sharding)
    if jnp.issubdtype(u.dtype, jax.dtypes.prng_key):
        u, v = jax.random.key_data(u), jax.random.key_data(v)
    return jnp.array_equal(u, v, equal_nan=jnp.issubdtype(u.dtype, jnp.inexact))


def is_deleted(value) -> bool:
    """Whether `value` is a JAX array whose buffers are gone (``donate_argnums``, ``.delete()``):
    no computation can read it."""
    return isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer) and (
        value.is_deleted())
