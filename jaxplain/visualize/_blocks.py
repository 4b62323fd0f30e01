"""Building blocks: semantic dictionaries and attribution between two sites.

A semantic dictionary lists, for each position of an input's activation grid at a site, the
channels that fire most there (to be shown with the channels' visualizations). Site
attribution is activation x gradient at a source site of an objective on a later site (or the
logits): summed over channels it is spatial attribution, over space it is channel attribution
(Olah et al., 2018). Both are compositions of ``capture``, ``intervene`` and ``grad``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from jaxplain.core import capture, intervene
from jaxplain.core._select import one_site
from jaxplain.visualize._checks import check_objective, check_sites, read_one_site, site_names
from jaxplain.visualize._objectives import Objective


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["channels", "values"], meta_fields=["site"])
@dataclasses.dataclass(frozen=True)
class SemanticDictionary:
    """Top channels per position.

    Attributes:
        site: the site name.
        channels: ``(b, *spatial, k)`` int indices of the ``k`` most active channels, strongest first.
        values: ``(b, *spatial, k)`` their activations.
    """

    site: str
    channels: Array
    values: Array


def semantic_dictionary(f: Callable[[Array], Array], x: Float[ArrayLike, "b ..."], *, site: str,
                        k: int = 4) -> SemanticDictionary:
    """For each position of ``site``, the ``k`` channels with the largest activation.

    Pair ``channels`` with the channel visualizations from :func:`render` to draw the dictionary.

    Example:
        >>> d = semantic_dictionary(f, x[:1], site="block1/relu_1", k=3)
        >>> d.channels.shape   # (1, 8, 8, 3)

    References:
        Olah et al. The building blocks of interpretability. Distill, 2018.
    """
    site = read_one_site(f, x, site)
    _, acts = capture(f, site)(x)
    value = acts[site]
    if not isinstance(k, int) or not 1 <= k <= value.shape[-1]:
        raise ValueError(f"k must be an int in [1, {value.shape[-1]}] (the channels of {site!r}), "
                         f"got {k!r}")
    values, channels = jax.lax.top_k(value, k)
    return SemanticDictionary(site, channels, values)


def site_attribution(f: Callable[[Array], Array], x: Float[ArrayLike, "b ..."],
                     objective: Objective, *, site: str) -> Float[Array, "b *site"]:
    """Activation x gradient at ``site`` of ``objective`` (evaluated downstream of ``site``).

    ``objective`` is any objective, e.g. ``class_logit(3)``, ``class_logit(y)`` with one class
    per example (``y`` of shape ``(b,)``), or ``channel("fc1", 5)`` for attribution between two
    hidden sites; its value per example is differentiated with respect to the activation at
    ``site`` (via an additive perturbation there), then multiplied by that activation.

    Args:
        f: the model, a pure function from a batch to logits ``(b, classes)``.
        x: ``(b, ...)`` the inputs.
        objective: an :class:`Objective` on the logits or on sites computed after ``site``.
        site: one site name (see ``jaxplain.sites``; a glob must match exactly one site).

    Raises:
        ValueError: when the objective reads a site computed before ``site`` (it cannot depend
            on ``site``: the attribution would be all zeros), or indexes a class, channel,
            neuron position or direction length the model does not have (JAX would clamp it),
            as :func:`render` does.
        TypeError: when ``site`` is not one name (a list, say).

    Returns:
        ``(b, *spatial, channels)``, shaped like the site's value (channels last);
        ``.sum(-1)`` is spatial attribution, ``.sum(axis=spatial)`` channel attribution (see
        :func:`channel_attribution`).

    Example:
        >>> a = site_attribution(f, x, class_logit(3), site="block1/relu_1")
    """
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be an Objective, got {type(objective).__name__}")
    order = site_names(f, x)
    site = one_site(order, site)
    names = list(objective.sites())
    _check_downstream(order, names, site)
    if names:
        logits, later = jax.eval_shape(capture(f, names), x)
    else:
        logits, later = jax.eval_shape(f, x), {}
    check_objective(objective, logits=logits.shape,
                    shapes={k: v.shape for k, v in later.items()})
    _, acts = capture(f, site)(x)
    value = acts[site]

    def total(delta):
        h = intervene(f, {site: lambda v: v + delta})
        if names:
            y, later = capture(h, names)(x)
        else:
            y, later = h(x), {}
        return objective(later, y, x)

    grad = jax.grad(total)(jnp.zeros_like(value))
    return value * grad


def _check_downstream(order: tuple[str, ...], names: list[str], site: str) -> None:
    """Raise ValueError when ``objective`` reads a site computed before ``site``: no gradient
    flows back from it, so its attribution would be all zeros."""
    check_sites(names, order)
    upstream = [n for n in names if order.index(n) < order.index(site)]
    if upstream:
        first = min(order.index(n) for n in upstream)
        raise ValueError(
            f"the objective reads site(s) {upstream}, computed before site={site!r}, so it does "
            f"not depend on {site!r} and every attribution would be 0: site must come before "
            f"the objective's sites (before {order[first]!r}: one of {list(order[:first])}), or "
            "the objective must read a later site or the logits")


def channel_attribution(f: Callable[[Array], Array], x: Float[ArrayLike, "b ..."],
                        objective: Objective, *, site: str) -> Float[Array, "b channels"]:
    """Site attribution summed over space: one score per channel of ``site`` per example.

    Args:
        f: the model, a pure function from a batch to logits ``(b, classes)``.
        x: ``(b, ...)`` the inputs.
        objective: an :class:`Objective` on the logits or on sites computed after ``site``,
            e.g. ``class_logit(y)`` with ``y`` ``(b,)`` for each example's own class.
        site: one site name (a glob must match exactly one site).

    Returns:
        ``(b, channels)``: :func:`site_attribution` summed over the spatial axes of ``site``
        (a dense site's ``(b, channels)`` as it is). When the network after ``site`` is linear
        in it, each row sums to the objective's value on that example.

    Example:
        >>> c = channel_attribution(f, x, class_logit(3), site="block1/relu_1")    # (b, 16)
    """
    a = site_attribution(f, x, objective, site=site)
    return a if a.ndim == 2 else jnp.sum(a, axis=tuple(range(1, a.ndim - 1)))


def spatial_attribution(f: Callable[[Array], Array], x: Float[ArrayLike, "b ..."],
                        objective: Objective, *, site: str) -> Float[Array, "b *spatial"]:
    """Site attribution summed over channels: one score per position of ``site``.

    Args:
        f: the model, a pure function from a batch to logits ``(b, classes)``.
        x: ``(b, ...)`` the inputs.
        objective: an :class:`Objective` on the logits or on sites computed after ``site``,
            e.g. ``class_logit(y)`` with ``y`` ``(b,)`` for each example's own class.
        site: one site name (a glob must match exactly one site).

    Returns:
        ``(b, *spatial)``: :func:`site_attribution` summed over the channels of ``site``
        (``(b,)`` on a dense site). When the network after ``site`` is linear in it, each
        example's map sums to the objective's value on that example.

    Example:
        >>> s = spatial_attribution(f, x, class_logit(3), site="block1/relu_1")    # (b, 8, 8)
    """
    return jnp.sum(site_attribution(f, x, objective, site=site), axis=-1)
