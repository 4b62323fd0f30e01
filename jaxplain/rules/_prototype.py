"""Prototyping with rule neuron groups: a feature-visualization objective for a rule's neurons.

The seed's "super-charged prototyping": a rule says which neurons fire *together*, so render
the group, not one neuron at a time (``jaxplain.visualize.render``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jaxplain.rules._ruleset import Rule

PARTS = ("tail", "head", "both")


def rule_objective(rule: Rule, sites: Mapping[str, str], *, part: str = "tail",
                   layouts: Mapping[str, tuple] | None = None):
    """The activation-maximization objective of a rule's neuron group.

    Items of a filter-mode or dense layer are channels (last axis) of their site: the
    objective is the sum of the group's channels, each averaged over space
    (``visualize.channel`` with an index array). Items of a locality-mode layer are
    (position, filter) neurons: give the layer's ``Binarized.shape`` (``(h, w, c)``, or
    ``(length, c)`` for a 1-D map) in
    ``layouts`` and the objective sums those single neurons (``visualize.neuron``).

    Args:
      rule: a mined ``Rule``.
      sites: layer name (as given to ``mine``) -> the site name its items were captured at.
      part: "tail" (Y, the default), "head" (X), or "both" (the two groups' sums added; they
        sit on different sites, each in its own units).
      layouts: layer name -> item layout, needed for locality-mode layers only.

    Returns:
      A ``jaxplain.visualize.Objective`` to pass to ``jaxplain.visualize.render``.

    Raises:
      ValueError: unknown ``part``, a rule layer missing from ``sites``, or a locality layout
        that does not hold the rule's items.

    Example:
      >>> obj = rule_objective(rules.rules[0], {"conv": "block1/relu_1", "fc": "relu_1"})  # doctest: +SKIP
      >>> out = render(f, obj, key=jax.random.key(0), shape=(1, 8, 8, 1))  # doctest: +SKIP
    """
    from jaxplain.visualize import channel, neuron

    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    groups = {"tail": [(rule.tail_layer, rule.tail)], "head": [(rule.head_layer, rule.head)]}
    groups["both"] = groups["head"] + groups["tail"]
    layouts = dict(layouts or {})
    terms = []
    for layer, items in groups[part]:
        if layer not in sites:
            raise ValueError(f"sites has no entry for the rule's layer {layer!r}; got "
                             f"{sorted(sites)}")
        items = np.asarray(items, np.int32)
        layout = layouts.get(layer)
        if layout is None or len(layout) == 1:
            terms.append(channel(sites[layer], items))
            continue
        if items.max() >= np.prod(layout):
            raise ValueError(f"layouts[{layer!r}] must be the (*positions, c) item layout of a "
                             f"locality layer ((length, c) or (h, w, c)) holding items up to "
                             f"{items.max()}, got {layout}")
        *position, filt = np.unravel_index(items, tuple(layout))
        terms.append(neuron(sites[layer], filt.astype(np.int32),
                            np.stack(position).astype(np.int32)))
    return sum(terms[1:], terms[0])
