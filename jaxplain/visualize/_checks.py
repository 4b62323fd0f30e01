"""Checks of an objective against a model, before any tracing: the sites it reads, its class,
channel and position indices and the length of its vectors.

JAX clamps an out-of-range index, so unchecked, channel 9 of a 4-channel site would silently be
channel 3 and class 9 of a 4-class model class 3. :func:`jaxplain.visualize.render` and
:func:`jaxplain.visualize.site_attribution` (with its channel and spatial sums) run the same
checks, from shapes alone.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from jaxplain.core import sites
from jaxplain.core._select import one_site, unknown_site_error
from jaxplain.visualize._cosine import CosineDirection, CosineDirectionNeuron
from jaxplain.visualize._objectives import (Channel, Class, Direction, Neuron, Objective,
                                            leaf_values, terms)


def site_names(f: Callable[[Array], Array], x: Array) -> tuple[str, ...]:
    """The names of ``f``'s sites on a batch shaped like ``x``, in the order they are computed."""
    spec = jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
    return tuple(s.name for s in sites(f, spec))


def read_one_site(f: Callable[[Array], Array], x: Array, site: str) -> str:
    """The one site named by ``site`` (a name, or a glob with one match): a glob with several
    matches is a ValueError naming them, a list or any other non-str a TypeError."""
    return one_site(site_names(f, x), site)


def check_sites(names, known: tuple[str, ...]) -> None:
    """Raise ValueError for a site an objective reads that is not one of ``known`` (the model's
    site names): a glob names the sites it matches, any other name the close matches."""
    for name in names:
        if name in known:
            continue
        hits = fnmatch.filter(known, name)
        if hits:
            raise ValueError(
                f"objective site {name!r} is a pattern, but an objective reads one site by its "
                f"exact name; it matches {hits}: pass one of them, or sum one objective per "
                f"site, e.g. sum(layer(s) for s in {hits!r})")
        raise unknown_site_error(name, known, what="objective site")


def check_objective(objective: Objective, *, logits: tuple[int, ...],
                    shapes: Mapping[str, tuple[int, ...]], batched: bool = False,
                    where: str = "") -> None:
    """Raise ValueError when ``objective`` indexes outside what the model computes.

    Args:
        objective: an objective, or a stack of them (``batched``: every leaf has a leading
            objective axis).
        logits: the model's output shape on the batch, ``(b, classes)``.
        shapes: the shape ``(b, *spatial, channels)`` of each site the objective reads.
        batched: whether ``objective`` is a stack.
        where: appended to the messages about positions and vectors (which image size was
            checked).
    """
    for t in terms(objective):
        if isinstance(t, Class):
            _check_class(t, logits, batched)
        if isinstance(t, (Channel, Neuron)):
            n = shapes[t.site][-1]
            vals = leaf_values(t.index)
            if vals is not None and any(not 0 <= int(i) < n for i in vals):
                raise ValueError(f"channel index out of range for site {t.site!r} with {n} "
                                 f"channels: got {vals}")
        if isinstance(t, (Neuron, CosineDirectionNeuron)) and t.position is not None:
            _check_position(t, shapes[t.site], batched, where)
        if isinstance(t, (Direction, CosineDirection, CosineDirectionNeuron)):
            _check_vector(t, shapes[t.site], batched, where)


def _check_class(t: Class, logits: tuple[int, ...], batched: bool) -> None:
    """The output is ``(b, classes)``; a class index is one class, or one per example of the
    batch; each in range."""
    kind = "class_probability" if t.probability else "class_logit"
    if len(logits) != 2:
        raise ValueError(
            f"{kind} reads the model's output as (batch, classes) logits, but f returns shape "
            f"{tuple(logits)}: make f return a (b, classes) output (e.g. y[:, None] for one "
            "score per example, then class 0), or write an objective on a site instead of the "
            "logits (channel, neuron, direction, layer)")
    given = jnp.shape(t.index)[batched:]
    b, classes = logits
    if given not in ((), (b,)):
        raise ValueError(
            f"{kind}: the index must be one class (an int) or one class per example, an int "
            f"array of shape ({b},) for this batch of {b} (x's examples, or the images render "
            f"optimises per objective, shape[0]); got shape {given}. For the sum of several "
            f"classes, add objectives: {kind}(0) + {kind}(2)")
    vals = leaf_values(t.index)
    if vals is not None and any(not 0 <= int(i) < classes for i in vals):
        raise ValueError(f"{kind}: class index out of range, got {vals}; the model has "
                         f"{classes} classes (0 to {classes - 1})")


def _check_position(t, shape: tuple[int, ...], batched: bool, where: str) -> None:
    """A neuron position has one coordinate per spatial axis of the site, each in range; a
    neuron group's positions ``(coordinates, *group)`` pair with its index array."""
    spatial = shape[1:-1]
    given = jnp.shape(t.position)  # ([b,] coordinates[, *group])
    group = given[1 + batched:]
    if (len(given) < 1 + batched or given[batched] != len(spatial)
            or (group and group != jnp.shape(t.index)[-len(group):])):
        got = leaf_values(t.position)
        got = (f"shape {given}" if got is None or batched
               else tuple(got) if given else got[0])
        raise ValueError(
            f"neuron position for site {t.site!r} must have {len(spatial)} coordinate(s), one "
            f"per spatial axis of the site's shape {shape} (batch, *spatial, channels){where}; "
            f"got position {got}" + (" (a dense site takes position=())" if not spatial else ""))
    vals = leaf_values(t.position)
    if vals is not None and spatial:
        coords = np.moveaxis(np.reshape(vals, given), batched, -1)
        pos = [tuple(int(c) for c in q) for q in coords.reshape(-1, len(spatial))]
        if any(not all(0 <= p < s for p, s in zip(q, spatial)) for q in pos):
            raise ValueError(f"neuron position out of range for site {t.site!r} with spatial "
                             f"shape {spatial}{where}: got {pos}")


def _check_vector(t, shape: tuple[int, ...], batched: bool, where: str) -> None:
    """A direction vector has one entry per channel; :class:`Direction` also takes one shaped
    like one example's value at the site (a CAV)."""
    given = jnp.shape(t.vector)[batched:]
    if given == shape[-1:] or (isinstance(t, Direction) and given == shape[1:]):
        return
    also = (f", or shaped like one example's value there, {shape[1:]}"
            if isinstance(t, Direction) and len(shape) > 2 else "")
    raise ValueError(f"direction vector for site {t.site!r} must have {shape[-1]} entries (one "
                     f"per channel){also}{where}; got shape {given}")
