"""Cosine-direction objectives (Lucent's ``direction`` and ``direction_neuron``).

Beside :func:`jaxplain.visualize.direction` (a raw dot product with the spatially averaged
activations), these score the cosine between a channel-space vector and the activation vector
at each position (or at one position) of a site: in ``[-1, 1]`` per image and invariant to the
vector's scale.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from jaxplain.visualize._objectives import (Objective, _at, _check_site, _position, _pytree,
                                            leaf_values)

_EPS = 1e-8


def _cosine(value: Float[Array, "*b c"], vector: Float[Array, " c"]) -> Float[Array, "*b"]:
    """Cosine of each activation vector with ``vector``, ``a.v / (max(|a|, eps) max(|v|, eps))``
    as ``torch.nn.CosineSimilarity`` (eps 1e-8); finite gradients at ``a = 0``."""
    def norm(u):
        return jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(u), axis=-1), _EPS**2))

    vector = jnp.asarray(vector, value.dtype)
    return value @ vector / (norm(value) * norm(vector))


@_pytree
class CosineDirection(Objective):
    """Mean over space of the cosine between ``vector`` and each position's activation vector
    at ``site`` (Lucent's ``direction``); invariant to the scale of ``vector``."""

    site: str
    vector: Any

    def sites(self):
        return (self.site,)

    def __call__(self, acts, logits, x):
        cos = _cosine(acts[self.site], self.vector)
        return jnp.sum(jnp.mean(cos.reshape(cos.shape[0], -1), axis=1))


@_pytree
class CosineDirectionNeuron(Objective):
    """The cosine between ``vector`` and the activation vector at one ``position`` of ``site``
    (Lucent's ``direction_neuron``; ``None``: the site's centre)."""

    site: str
    vector: Any
    position: Any

    def sites(self):
        return (self.site,)

    def __call__(self, acts, logits, x):
        return jnp.sum(_cosine(_at(acts[self.site], self.position), self.vector))



def _cosine_vector(vector: Any) -> Array:
    vector = jnp.asarray(vector)
    if vector.ndim != 1:
        raise ValueError(f"vector must be 1-D (one weight per channel), got shape {vector.shape}")
    vals = leaf_values(vector)
    if vals is not None and not any(vals):
        raise ValueError("vector must not be all zeros: a cosine with the zero vector is "
                         "undefined")
    return vector


def cosine_direction(site: str, vector: Float[ArrayLike, " channels"]) -> CosineDirection:
    """Objective: the cosine similarity of ``vector`` with the activation vector at each
    position of ``site``, averaged over space (Lucent's ``direction``).

    Unlike :func:`direction` (a raw dot product with the spatially averaged activations, which
    grows with ``|vector|`` and with the activations), the cosine is in ``[-1, 1]`` per image
    and does not change when ``vector`` is scaled.

    Example:
        >>> obj = cosine_direction("block1/relu_1", jnp.eye(16)[3])
    """
    return CosineDirection(_check_site(site), _cosine_vector(vector))


def cosine_direction_neuron(site: str, vector: Float[ArrayLike, " channels"],
                            position: tuple[int, ...] | ArrayLike | None = None
                            ) -> CosineDirectionNeuron:
    """Objective: the cosine similarity of ``vector`` with the activation vector at one
    ``position`` (``(y, x)``; default the centre ``(h // 2, w // 2)``) of ``site`` (Lucent's
    ``direction_neuron``)."""
    return CosineDirectionNeuron(_check_site(site), _cosine_vector(vector), _position(position))
