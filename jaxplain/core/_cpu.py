"""The CPU rewrites applied to a network before it is differentiated.

Two patterns run slowly on XLA:CPU, forward or backward, wherever they appear: pools, whose
gradients become block reductions or slice selections (:mod:`jaxplain.core._pools`), and
convolutions with few positions or 1x1 kernels, which become patch products
(:mod:`jaxplain.core._patches`). Rewriting the forward pass is enough: the gradients of the
rewritten forms are fast too. Loop bodies need the layout rewrite as well
(:func:`jaxplain.core._layout.fast_convolutions`). A third pattern, a sum over the leading axis
alone, is not rewritten: the methods that sum steps or samples call :func:`sum_leading`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxplain.core import _layout, _pools
from jaxplain.core._reinterpret import on_cpu


def cpu_friendly(fn: Callable) -> Callable:
    """``fn`` with pools in forms with fast gradients and few-position and 1x1 convolutions as
    patch products on CPU; the same values (up to rounding) and gradients, and on other platforms
    ``fn`` as it is. Apply it before differentiating.

    Args:
      fn: any function of arrays (a model ``x (batch, ...) -> logits``, or one returning a
        pytree); loop bodies and custom derivatives inside it are left as they are.

    Returns:
      A function with ``fn``'s signature; it composes with ``jit``, ``grad``, ``jvp``, ``vmap``.

    Example:
      >>> g = jax.jit(jax.grad(lambda x: cpu_friendly(f)(x)[:, 3].sum()))  # doctest: +SKIP
    """
    return on_cpu(fn, {**_pools.REWRITES, **_layout.REWRITES})


def sum_leading(a: jax.Array) -> jax.Array:
    """``a.sum(axis=0)``, for floating `a` as a product with a vector of ones.

    XLA:CPU reduces over a leading axis with a strided inner loop: 50 gradients of 32 x 16 x 16
    x 16 floats took 20 ms to sum, against 1.3 ms as a matrix-vector product. The product runs
    at the highest precision (no TF32 on GPUs); on GPU both forms are fast.
    """
    if not jnp.issubdtype(a.dtype, jnp.floating):
        return a.sum(axis=0)
    ones = jnp.ones((a.shape[0],), a.dtype)
    flat = a.reshape(a.shape[0], -1)
    return jnp.dot(ones, flat, precision=jax.lax.Precision.HIGHEST).reshape(a.shape[1:])
