"""Where the multipliers sit: scored sites whose removed units would still feed a constant.

A unit is removed by multiplying its value by 0. When the next op adds a per-unit shift (a
BatchNorm in inference mode adds ``beta - mean * gamma / sqrt(var)``; a bias added after the
site), the removed unit's channel still carries that shift downstream: the sub-network is not
the one its masks describe. :func:`shifted` finds such sites once, before optimising.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jp
from jaxplain.core._backward import linear_layer_names
from jaxplain.subnet._threshold import _probe


def shifted(f: Callable, x: jax.Array, names: tuple[str, ...], key: jax.Array
            ) -> list[tuple[str, str, float]]:
    """``(site, next site, max |value|)`` for each scored site whose removed units still feed
    a constant.

    With every scored site replaced by 0, the next site ``t`` after a scored site ``s`` (in
    the network's order; same shape, not scored) is flagged when it is a non-zero constant (its
    derivative along a pseudo-random input direction is exactly 0) that depends on ``s`` unit by
    unit (moving the even units of ``s`` moves only even units of ``t``, the odd ones only odd
    ones, and some move): the signature of a per-unit shift between them. Linear layers (a
    convolution or dense layer with a bias, a depthwise convolution too, though it maps unit
    to unit) are not flagged: their bias belongs to their own units.

    Args:
      f: The model.
      x: ``Float[Array, "n *shape"]``, the region.
      names: The scored sites, in the network's order.
      key: PRNG key of the input direction.

    Returns:
      The flagged sites, in order; empty when none is.
    """
    known, linear = jp.sites(f, x), linear_layer_names(f, x)
    following = {s.name: t.name for s, t in zip(known, known[1:])
                 if s.name in names and t.name not in names and t.name not in linear
                 and t.shape == s.shape}
    if not following:
        return []
    watched = sorted(set(following.values()))
    dtypes = {s.name: s.dtype for s in known}
    units = {s.name: s.shape[-1] for s in known if s.name in names}

    def values(x, z):
        # v * 0 + z, not a constant: the site stays input-dependent, so the kernel still
        # follows its channel axis downstream (an NCHW model's watched sites keep channels last).
        edits = {n: (lambda v, n=n: v * jnp.zeros((), v.dtype) + z[n].astype(v.dtype))
                 for n in names}
        return jp.capture(jp.intervene(f, edits), watched)(x)[1]

    zero = {n: jnp.zeros((units[n],), dtypes[n]) for n in names}
    leaks = {t: float(jnp.max(jnp.abs(v))) for t, v in values(x, zero).items()}
    following = {s: t for s, t in following.items() if leaks[t] > 0}
    if not following:  # the common case, checked with one forward pass
        return []
    even = {n: (jnp.arange(units[n]) % 2 == 0).astype(dtypes[n]) for n in names}
    _, along_units = jax.linearize(lambda z: values(x, z), zero)
    moved = [along_units(even), along_units(jax.tree.map(lambda e: 1 - e, even))]
    _, along_input = jax.jvp(lambda x: values(x, zero), (x,),
                             (_probe(key, 2, x.shape, x.dtype),))
    found = []
    for s, t in following.items():
        odd = np.arange(units[s]) % 2 == 1
        moves = [np.any(np.asarray(d[t]) != 0, axis=tuple(range(d[t].ndim - 1))) for d in moved]
        unitwise = (moves[0] | moves[1]).any() and not (moves[0] & odd).any() \
            and not (moves[1] & ~odd).any()
        constant = not np.any(np.asarray(along_input[t]) != 0)
        if unitwise and constant:
            found.append((s, t, leaks[t]))
    return found
