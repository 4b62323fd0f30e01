"""The check of a PRNG key argument, shared by every function that draws random numbers."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=None)
def _raw_shape(impl: str) -> tuple[int, ...]:
    """The shape of a legacy raw key of the default PRNG implementation `impl` ((2,) for
    threefry)."""
    return tuple(jax.eval_shape(jax.random.PRNGKey, 0).shape)


def check_key(key: Any, name: str = "key") -> Any:
    """`key` as given, if it is one JAX PRNG key as ``jax.random`` takes it: a typed key
    (``jax.random.key(0)``, shape ``()``) or a legacy raw key (``jax.random.PRNGKey(0)``: uint32
    data of the default implementation's shape, ``(2,)``); a tracer of either passes.

    Raises:
      ValueError: `key` is None (the argument is missing).
      TypeError: anything else (an int seed, an array of several keys), naming `name` and how
        to make a key.
    """
    if key is None:
        raise ValueError(f"{name} is required (random numbers are drawn): pass a PRNG key, "
                         f"e.g. {name}=jax.random.key(0)")
    dtype, shape = getattr(key, "dtype", None), tuple(getattr(key, "shape", ()))
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if shape == ():
            return key
        raise TypeError(f"{name} must be one PRNG key; got an array of keys of shape {shape}: "
                        "pass one of them, or jax.vmap the call over them")
    raw = _raw_shape(str(jax.config.jax_default_prng_impl))
    if dtype == np.uint32 and shape == raw:
        return key
    seed = shape == () and (jnp.issubdtype(dtype, jnp.integer) if dtype is not None else
                            isinstance(key, int) and not isinstance(key, bool))
    if dtype is None:
        got = f"{type(key).__name__} {key!r:.80}"
    else:
        got = f"an array of dtype {dtype} and shape {shape}"
    if seed:
        got += f" (a seed: pass {name}=jax.random.key(seed))"
    elif dtype is not None:
        got += f" (a raw key is uint32 of shape {raw}, as jax.random.PRNGKey(0) makes)"
    raise TypeError(f"{name} must be a PRNG key, e.g. jax.random.key(0); got {got}")
