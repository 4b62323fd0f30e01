"""One switch for every cache jaxplain keeps: :func:`clear_caches`.

The methods compile once per model function and reuse the result (``jax.jit``'s convention for a
static argument), so their caches hold each function they have seen — and the weights it
closes over — until evicted. :func:`clear_caches` empties them all and ``jax.clear_caches()``:
afterwards a function that nothing else refers to is released.

Which caches: every ``functools.lru_cache`` / ``functools.cache`` at the top level of a loaded
``jaxplain`` module (found, so a new one needs no registration), every module-level
``weakref.WeakKeyDictionary`` / ``WeakValueDictionary`` (the per-function trace caches), and
anything passed to :func:`register` (a cache of another kind, e.g. a plain dict).
"""

from __future__ import annotations

import sys
import weakref

import jax

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
