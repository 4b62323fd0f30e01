"""Shared by the Quantus-family metrics: argument checks, per-example random draws and
batched evaluation.

Faithfulness correlation, monotonicity correlation and infidelity evaluate ``f`` on ``m``
perturbed copies of every example. Copy ``j`` of example ``i`` is built from its own key
``item_key(key, i, j) = fold_in(fold_in(key, i), j)``, inside the vmapped function that
evaluates it, so an example's score depends on the key and its place in the batch only (``x[:k]``
scores as the first ``k`` rows of ``x``, whatever ``batch_size``), no ``(batch, m, *shape)``
array of draws is ever held, and a reference implementation can regenerate every draw.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxplain.attribution._common import chunked_map, widen
from jaxplain.metrics import _checks as checks
from jaxplain.metrics import _perturb as P
from jaxplain.metrics._faithfulness import checked, reading


def split_baseline(baseline: Any, x: jax.Array) -> tuple[str | None, jax.Array | None]:
    """:func:`jaxplain.metrics._perturb.split_baseline` without ``"blur"``."""
    if isinstance(baseline, str) and baseline == "blur":
        raise ValueError('baseline must be "zeros", "mean", a number or an array broadcastable '
                         f'to x {x.shape}; "blur" is offered by deletion and insertion only')
    return P.split_baseline(baseline, x)


def prepare(f, x, target, attribution, output, batch_size, baseline=0.0):
    """The checked arguments of a perturbation metric: ``x``, the attribution broadcast to it,
    the targets, the baseline (kind, value), how to read ``f``'s output and ``batch_size``."""
    x, attribution, target = checked(f, x, target, attribution)
    checks.check_choice(output, "output", P.OUTPUTS)
    kind, value = split_baseline(baseline, x)
    batch_size = checks.check_batch_size(batch_size)
    return x, attribution, target, kind, value, reading(f, x, output), batch_size


def check_scale(value: Any, name: str) -> float:
    """`value` as a float if it is a positive number."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def item_key(key: jax.Array, i: jax.Array, j: jax.Array) -> jax.Array:
    """The key of copy `j` of example `i`."""
    return jax.random.fold_in(jax.random.fold_in(key, i), j)


def gaussian(key: jax.Array, scale: float | jax.Array, example: jax.Array) -> jax.Array:
    """``scale * N(0, 1)`` noise shaped like `example`, drawn in float32 at least (a bfloat16
    example gets the float32 draws of the same key)."""
    wide = jnp.promote_types(example.dtype, jnp.float32)
    return scale * jax.random.normal(key, example.shape, wide)


def evaluate_copies(
    f: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    copy: Callable[[jax.Array, jax.Array], tuple[jax.Array, Any]],
    target: jax.Array,
    m: int,
    output: str,
    batch_size: int | None,
) -> tuple[jax.Array, jax.Array, Any]:
    """The target outputs of every example and of its copies, float32 at least.

    ``copy(i, j)`` gives ``(input, aux)`` for copy ``j < m`` of example ``i``. Returns ``(batch,)``
    outputs of ``f(x[i][None])``, ``(batch, m)`` outputs of ``f(input[None])`` and ``aux``
    stacked to ``(batch, m, ...)``. The examples are evaluated as copy ``m`` in the same call as
    their copies, so a copy that changes nothing the model sees reads exactly the example's
    output (an exact tie stays one); ``batch_size`` inputs per call of ``f`` (None: all at once on
    GPU/TPU, on CPU as many as keep a pass in cache)."""
    n = x.shape[0]

    def value(item):
        i, j = item
        xi, aux = copy(i, jnp.minimum(j, m - 1))
        xi = jnp.where(j == m, x[i], xi)
        return P.readout(f(xi[None]), target[i], output)[0], aux

    items = (jnp.repeat(jnp.arange(n), m + 1), jnp.tile(jnp.arange(m + 1), n))
    y, aux = chunked_map(value, items, batch_size)
    y = widen(y).reshape(n, m + 1)
    aux = jax.tree_util.tree_map(lambda a: a.reshape((n, m + 1) + a.shape[1:])[:, :m], aux)
    return y[:, m], y[:, :m], aux
