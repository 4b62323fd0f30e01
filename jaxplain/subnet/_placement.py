"""Where the multipliers sit: scored sites whose removed units would still reach the output.

A unit is removed by multiplying its value by 0. Ops that map its channel to the same channel
alone (a BatchNorm in inference mode adds ``beta - mean * gamma / sqrt(var)``; a bias added
after the site; a depthwise convolution adds its bias; a sigmoid gate gives 0.5 at 0) carry
the removed channel on, and what they add to it is the removed unit's: when that channel is a
non-zero constant where it meets other channels (a mixing layer, a residual sum), the
sub-network is not the one its masks describe. Nor is it when the channel reaches a normaliser
whose statistics span the channels (a GroupNorm, a LayerNorm): it turns the zeroed channel into
``-mean / std``, input-dependent. :func:`placement` finds both kinds of site once, before
optimising.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

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
# How little of the change from 0 a normaliser's output may move as its input doubles (its
# epsilon's share, well below a saturating activation's).
_INVARIANT = 2e-2


class Placement(NamedTuple):
    """What :func:`placement` finds, each list in the order of the scored sites.

    Attributes:
      shifted: ``(site, reached site, max |value|)``: the removed units' channels still hold a
        non-zero constant where they meet other channels.
      normalised: ``(site, normaliser site, max |change|)``: the removed units' channels reach a
        normaliser whose statistics span the channel axis, which moves them off 0 (by up to
        the value given) with the input, and shifts the kept channels' statistics.
    """

    shifted: list[tuple[str, str, float]]
    normalised: list[tuple[str, str, float]]


def shifted(f: Callable, x: jax.Array, names: tuple[str, ...]) -> list[tuple[str, str, float]]:
    """``(site, reached site, max |value|)`` for each scored site whose removed units still
    feed a constant: :attr:`Placement.shifted` of :func:`placement`."""
    return placement(f, x, names).shifted


def placement(f: Callable, x: jax.Array, names: tuple[str, ...]) -> Placement:
    """The scored sites whose removed units would still reach the output, in one probe.

    For each scored site ``s``, with ``s`` at 0 and the other sites as they are, the sites after
    ``s`` are followed along ``s``'s channels: a site whose channels move only with the same
    channels of ``s`` (pushing the even units of ``s`` moves only even units, the odd ones only
    odd ones; pushed far, past any clipping activation) and that does not change with the input
    carries the removed channels on. The walk stops at a site that mixes channels or joins
    input-dependent values (a residual sum), and the last site carried on, if any, is reported
    as shifted when it is not exactly 0. It also stops, without a report, at another scored
    site: the dependency closure removes the units there that only hold a constant.

    A site that mixes channels where the walk stops is a normaliser of them when, with the even
    units of ``s`` at 0 and the odd ones as they are, it does not change as ``s`` doubles (its
    statistics are taken over ``s``'s channels: a GroupNorm with two or more channels a group,
    a LayerNorm over the features). It is reported when it moves the zeroed channels off the
    value they have with all of ``s`` at 0: a norm that subtracts the mean does (a zeroed
    channel becomes ``-mean / std`` of its group), an RMSNorm does not (a zeroed channel stays
    0 and adds 0 to the mean square; only the count of channels is kept), nor does an
    InstanceNorm (its statistics are the channel's own).

    Args:
      f: The model.
      x: ``Float[Array, "n *shape"]``, the region (its first few samples are probed).
      names: The scored sites, in the network's order.

    Returns:
      A :class:`Placement`; its lists are empty when no site is flagged.
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
        return Placement([], [])
    # Every site's probe dispatched, then one read of them all (one wait on an accelerator).
    probes = jax.device_get([_probe(f, x, jnp.asarray(i, jnp.int32), names=tuple(names),
                                    after=after) for i in range(len(names))])
    found, normalised = [], []
    for s, (moved, size, leak, invariant) in zip(names, probes):
        even = np.arange(units[s]) % 2 == 0
        last = None
        for t in after[after.index(s) + 1 if s in after else 0:]:
            moves_even, moves_odd = moved[t][1:3].any(axis=0), moved[t][3:5].any(axis=0)
            if not (moves_even.any() or moves_odd.any()):
                continue  # another branch
            unitwise = units[t] == units[s] and not (moves_even & ~even).any() \
                and not (moves_odd & even).any()
            if not unitwise and units[t] == units[s] and invariant[t] \
                    and leak[t] > _ROUNDING * (1 + size[t]):
                normalised.append((s, t, float(leak[t])))
            if not unitwise or moved[t][5].any():
                break
            if t in names:  # the closure removes the units that only hold this constant
                last = None
                break
            last = t
        if last is not None and size[last] > 0:
            found.append((s, last, float(size[last])))
    return Placement(found, normalised)


@functools.partial(jax.jit, static_argnames=("f", "names", "after"))
def _probe(f, x, i, *, names, after) -> tuple[dict, dict, dict, dict]:
    """``({t: Bool[6, c_t]}, {t: max |value|}, {t: max |change|}, {t: bool})`` for the sites
    ``after`` with scored site ``i`` edited, in eight variants of a few samples stacked on the
    batch axis (see :func:`_pushed`): which channels move in the first six, by more than
    rounding, and the size of the first; how far the even channels move, with ``i``'s even
    units at 0 and its odd ones as they are, from all of ``i`` at 0; whether that variant
    holds still (up to ``_INVARIANT`` of that change) as ``i`` doubles."""
    k = min(x.shape[0], _SAMPLES)
    xs = jnp.concatenate([x[:k]] * 5 + [jnp.roll(x[:k], 1, axis=0)] + [x[:k]] * 2)
    edits = {n: OwnEdit(_pushed, i == j) for j, n in enumerate(names)}
    got = jp.capture(jp.intervene(f, edits), after)(xs)[1]
    moved, size, leak, invariant = {}, {}, {}, {}
    for t, v in got.items():
        v = v.reshape((8, k, -1, v.shape[-1]))
        moved[t] = jnp.any(jnp.abs(v[:6] - v[None, 0]) > _ROUNDING * (1 + jnp.abs(v[None, 0])),
                           axis=(1, 2))
        size[t] = jnp.max(jnp.abs(v[0]))
        leak[t] = jnp.max(jnp.abs(v[6] - v[0])[..., ::2])
        invariant[t] = jnp.max(jnp.abs(v[7] - v[6])) <= _INVARIANT * jnp.max(jnp.abs(v[6] - v[0]))
    return moved, size, leak, invariant


def _pushed(v, on):
    """`v` (the eight variants of `_probe`, ``k`` samples each, on the batch axis) where `on`:
    0, with its even units pushed up, down, its odd ones up, down, by `_PUSH`, 0 again (the
    samples rolled), then with its even units at 0 and its odd ones as they are, and doubled.
    ``v * 0 + push``, not a constant: the site stays input-dependent, so the kernel still
    follows its channel axis downstream (an NCHW model's sites keep channels last)."""
    k, c = v.shape[0] // 8, v.shape[-1]
    pushes = jnp.repeat(jnp.asarray([0.0, 1.0, -1.0, 1.0, -1.0, 0.0, 0.0, 0.0], v.dtype)
                        * _PUSH, k)
    kept = jnp.repeat(jnp.asarray([0.0] * 6 + [1.0, 2.0], v.dtype), k)
    odd = jnp.repeat(jnp.asarray([False, False, False, True, True, False, False, False]), k)
    is_odd = jnp.arange(c) % 2 == 1
    parity = is_odd[None, :] == odd[:, None]
    z = jnp.where(parity, pushes[:, None], jnp.zeros((), v.dtype))
    scale = jnp.where(is_odd[None, :], kept[:, None], jnp.zeros((), v.dtype))
    shape = (v.shape[0],) + (1,) * (v.ndim - 2) + (c,)
    return jnp.where(on, v * scale.reshape(shape) + z.reshape(shape), v)
