"""Where the multipliers sit: scored sites whose removed units would still feed a constant.

A unit is removed by multiplying its value by 0. Ops that map its channel to the same channel
alone (a BatchNorm in inference mode adds ``beta - mean * gamma / sqrt(var)``; a bias added
after the site; a depthwise convolution adds its bias; a sigmoid gate gives 0.5 at 0) carry
the removed channel on, and what they add to it is the removed unit's: when that channel is a
non-zero constant where it meets other channels (a mixing layer, a residual sum), the
sub-network is not the one its masks describe. :func:`shifted` finds such sites once, before
optimising.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jp
from jaxplain.core._capture import OwnEdit

# How far a unit is pushed (both ways) to see which channels downstream move with it: far
# enough to leave any saturated region of a clipping activation (ReLU6, hard tanh).
_PUSH = 1e4
# Samples of the region probed, and the relative change below which a value has not moved.
_SAMPLES = 4
_ROUNDING = 1e-5


def shifted(f: Callable, x: jax.Array, names: tuple[str, ...]) -> list[tuple[str, str, float]]:
    """``(site, reached site, max |value|)`` for each scored site whose removed units still
    feed a constant.

    For each scored site ``s``, with ``s`` at 0 and the other sites as they are, the sites after
    ``s`` are followed along ``s``'s channels: a site whose channels move only with the same
    channels of ``s`` (pushing the even units of ``s`` moves only even units, the odd ones only
    odd ones; pushed far, past any clipping activation) and that does not change with the input
    carries the removed channels on. The walk stops at a site that mixes channels or joins
    input-dependent values (a residual sum), and the last site carried on, if any, is reported
    when it is not exactly 0. It also stops, without a report, at another scored site: the
    dependency closure removes the units there that only hold a constant.

    Args:
      f: The model.
      x: ``Float[Array, "n *shape"]``, the region (its first few samples are probed).
      names: The scored sites, in the network's order.

    Returns:
      The flagged sites, in order; empty when none is.
    """
    known = jp.sites(f, x)
    order = [s.name for s in known]
    units = {s.name: s.shape[-1] for s in known}
    # Only a site with as many channels as a scored one can carry its channels on; a mixing
    # layer that changes their number is not watched, and the sites after it depend on the
    # scored site through it (not unit by unit), which stops the walk as well.
    after = tuple(t for t in order[order.index(names[0]) + 1:]
                  if units[t] in {units[n] for n in names})
    if not after:
        return []
    # Every site's probe dispatched, then one read of them all (one wait on an accelerator).
    probes = jax.device_get([_probe(f, x, jnp.asarray(i, jnp.int32), names=tuple(names),
                                    after=after) for i in range(len(names))])
    found = []
    for s, (moved, size) in zip(names, probes):
        even = np.arange(units[s]) % 2 == 0
        last = None
        for t in after[after.index(s) + 1 if s in after else 0:]:
            moves_even, moves_odd = moved[t][1:3].any(axis=0), moved[t][3:5].any(axis=0)
            if not (moves_even.any() or moves_odd.any()):
                continue  # another branch
            unitwise = units[t] == units[s] and not (moves_even & ~even).any() \
                and not (moves_odd & even).any()
            if not unitwise or moved[t][5].any():
                break
            if t in names:  # the closure removes the units that only hold this constant
                last = None
                break
            last = t
        if last is not None and size[last] > 0:
            found.append((s, last, float(size[last])))
    return found


@functools.partial(jax.jit, static_argnames=("f", "names", "after"))
def _probe(f, x, i, *, names, after) -> tuple[dict, dict]:
    """``({t: Bool[6, c_t]}, {t: max |value|})`` for the sites ``after`` with only scored site
    ``i`` at 0: which channels move, in six variants of a few samples stacked on the batch
    axis (as they are, the first; the even units of ``i`` pushed up, down; the odd ones up,
    down; the samples rolled, other inputs), by more than rounding."""
    k = min(x.shape[0], _SAMPLES)
    xs = jnp.concatenate([x[:k]] * 5 + [jnp.roll(x[:k], 1, axis=0)])
    edits = {n: OwnEdit(_pushed, i == j) for j, n in enumerate(names)}
    got = jp.capture(jp.intervene(f, edits), after)(xs)[1]
    moved, size = {}, {}
    for t, v in got.items():
        v = v.reshape((6, k, -1, v.shape[-1]))
        moved[t] = jnp.any(jnp.abs(v - v[None, 0]) > _ROUNDING * (1 + jnp.abs(v[None, 0])),
                           axis=(1, 2))
        size[t] = jnp.max(jnp.abs(v[0]))
    return moved, size


def _pushed(v, on):
    """`v` (the six variants of `_probe`, ``k`` samples each, on the batch axis) where `on`:
    0, with its even units pushed up, down, its odd ones up, down, then 0 again, by `_PUSH`.
    ``v * 0 + push``, not a constant: the site stays input-dependent, so the kernel still
    follows its channel axis downstream (an NCHW model's sites keep channels last)."""
    k, c = v.shape[0] // 6, v.shape[-1]
    pushes = jnp.repeat(jnp.asarray([0.0, 1.0, -1.0, 1.0, -1.0, 0.0], v.dtype) * _PUSH, k)
    odd = jnp.repeat(jnp.asarray([False, False, False, True, True, False]), k)
    parity = (jnp.arange(c) % 2 == 1)[None, :] == odd[:, None]
    z = jnp.where(parity, pushes[:, None], jnp.zeros((), v.dtype))
    z = z.reshape((v.shape[0],) + (1,) * (v.ndim - 2) + (c,))
    return jnp.where(on, v * jnp.zeros((), v.dtype) + z, v)
