"""How many items a chunked method evaluates per pass when its ``batch_size`` is None.

IG's steps, SmoothGrad's samples, occlusion's windows and a metric's perturbed copies are
items: a method folds a chunk of them into one batch per pass. On GPU and TPU every item goes
in one pass. On CPU a big pass is slow: XLA:CPU's gradient of a ResNet-18 at 64 px costs
0.6 ms per image at batch 8-32 and 1.1-1.5 ms at batch 64-256, once a pass's values outgrow
the caches. So on CPU the chunk is the most items whose pass computes at most :data:`BUDGET`
bytes of values, counted on the jaxpr of one item's pass (every value computed from the item,
before XLA fuses any; not the model's weights). The choice is static: shapes and
``jax.default_backend()`` at trace time, so it adds no compilation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

BUDGET = 160 * 2 ** 20
"""Bytes of values one pass may compute on CPU. Measured (2-core CPU, 32 MiB L3) at the knee of
the per-image gradient time: a ResNet-18 at 64 px computes 5.1 MiB per image (fast up to batch
32), a 4-block ViT at 32 px 10.5 MiB (up to 16), the digits CNN 0.11 MiB (up to about 1,000)."""

_CALLS = frozenset({"pjit", "closed_call", "core_call", "remat", "checkpoint",
                    "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"})


def _sub_jaxprs(eqn) -> list:
    subs = []
    for value in eqn.params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, jax.extend.core.ClosedJaxpr):
                subs.append(v.jaxpr)
            elif isinstance(v, jax.extend.core.Jaxpr):
                subs.append(v)
    return subs


def _nbytes(var) -> int:
    aval = var.aval
    if not hasattr(aval, "shape") or not hasattr(aval, "dtype"):
        return 0
    try:
        itemsize = np.dtype(aval.dtype).itemsize
    except TypeError:  # a PRNG key's dtype
        itemsize = 8
    return int(np.prod(aval.shape, dtype=np.int64)) * itemsize


def _dependent_bytes(jaxpr, dependent: list[bool]) -> int:
    """Bytes of the values of `jaxpr` that depend on the invars flagged in `dependent`."""
    live = {v for v, d in zip(jaxpr.invars, dependent) if d}
    total = 0
    for eqn in jaxpr.eqns:
        flags = [isinstance(v, jax.extend.core.Var) and v in live for v in eqn.invars]
        if not any(flags):
            continue
        live.update(eqn.outvars)
        subs = _sub_jaxprs(eqn)
        inner = sum(_dependent_bytes(s, flags if len(s.invars) == len(flags)
                                     else [True] * len(s.invars)) for s in subs)
        call = subs and eqn.primitive.name in _CALLS
        total += inner if call else inner + sum(map(_nbytes, eqn.outvars))
    return total


def pass_bytes(fn: Callable, *args: Any) -> int:
    """Bytes of the values ``fn(*args)`` computes from `args` (traced, not run): intermediates
    that depend only on closed-over arrays (a model's weights) are not counted."""
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    return _dependent_bytes(jaxpr, [True] * len(jaxpr.invars))


def even_chunk(m: int, c: int) -> int:
    """A chunk of at most `c` of `m` items that leaves no smaller last chunk where one is near
    (a divisor of `m` in ``[c/2, c]``), else `c` spread evenly: a last chunk of another size
    compiles the pass a second time."""
    if c >= m:
        return m
    for d in range(c, (c + 1) // 2 - 1, -1):
        if m % d == 0:
            return d
    passes = -(-m // c)
    return -(-m // passes)


def auto_chunk(batch_size: int | None, fn: Callable, xs: Any, *, per_item: bool = False) -> int:
    """Items per pass: `batch_size` where given, else all `xs` (leading axis) on GPU/TPU and on
    CPU the most whose pass stays within :data:`BUDGET`. `fn` takes a chunk of items (or one
    item, where `per_item`: it is vmapped over the chunk); it is traced once, at one item."""
    m = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if batch_size is not None:
        return min(batch_size, m)
    if jax.default_backend() != "cpu" or m == 1:
        return m
    first = jax.tree_util.tree_map(lambda a: a[0] if per_item else a[:1], xs)
    size = pass_bytes(fn, first)
    return even_chunk(m, max(1, BUDGET // max(size, 1)))
