"""Non-negative matrix factorization (multiplicative updates) and neuron groups of a site.

``V ~= W H`` with ``V`` ``(n, d)`` non-negative, ``W`` ``(n, k)``, ``H`` ``(k, d)``, both kept
non-negative by Lee & Seung's multiplicative updates for the Frobenius loss. Neuron groups
(Olah et al., 2018, "The building blocks of interpretability") factorize a site's activation
vectors over examples and positions: the rows of ``H`` are groups of channels (directions in
the site's channel space, ready for :func:`jaxplain.visualize.direction`), ``W`` says how much
each group is present at each position of each example.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from jaxplain.core import capture
from jaxplain.visualize._checks import read_one_site
from jaxplain.core._keys import check_key


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["w", "h", "error"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class NMF:
    """A factorization ``V ~= w @ h``.

    Attributes:
        w: ``(n, k)`` non-negative loadings.
        h: ``(k, d)`` non-negative components.
        error: relative reconstruction error ``||V - w h||_F / ||V||_F``.
    """

    w: Array
    h: Array
    error: Array


@functools.partial(jax.jit, static_argnames=("rank", "steps"))
def _nmf(v, key, *, rank, steps):
    n, d = v.shape
    k1, k2 = jax.random.split(key)
    scale = jnp.sqrt(jnp.mean(v) / rank)
    w = scale * jax.random.uniform(k1, (n, rank), v.dtype, 0.1, 1.0)
    h = scale * jax.random.uniform(k2, (rank, d), v.dtype, 0.1, 1.0)
    eps = jnp.asarray(1e-12, v.dtype)

    def step(carry, _):
        w, h = carry
        h = h * (w.T @ v) / (w.T @ w @ h + eps)
        w = w * (v @ h.T) / (w @ (h @ h.T) + eps)
        return (w, h), None

    (w, h), _ = jax.lax.scan(step, (w, h), None, length=steps)
    err = jnp.linalg.norm(v - w @ h) / jnp.maximum(jnp.linalg.norm(v), eps)
    return NMF(w, h, err)


def nmf(v: Float[ArrayLike, "n d"], rank: int, *, key: Array, steps: int = 500) -> NMF:
    """Factorize a non-negative matrix ``v ~= w @ h`` with multiplicative updates.

    Args:
        v: ``(n, d)`` non-negative, finite data; anything else is a ValueError, or under
            ``jax.jit`` (where the values are not known) an all-NaN result.
        rank: number of components ``k``.
        key: a JAX PRNG key (``jax.random.key(0)``, not an int seed) for the random positive
            start.
        steps: number of update rounds (each updates ``h`` then ``w``).

    Returns:
        :class:`NMF` with ``w (n, k)``, ``h (k, d)`` and the relative error.

    Example:
        >>> out = nmf(jnp.abs(x), 4, key=jax.random.key(0))
        >>> float(out.error) < 0.1

    References:
        Lee, Seung. Algorithms for non-negative matrix factorization. NIPS, 2000.
    """
    v = jnp.asarray(v)
    if v.ndim != 2:
        raise ValueError(f"v must be a 2-D (n, d) matrix, got shape {v.shape}")
    if not isinstance(rank, int) or not 1 <= rank <= min(v.shape):
        raise ValueError(f"rank must be an int in [1, min(n, d) = {min(v.shape)}], got {rank!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    check_key(key)
    if isinstance(v, jax.core.Tracer):
        finite, low = _finite_and_min(v)
    else:
        with jax.ensure_compile_time_eval():  # two scalars read back, not the matrix
            finite, low = jax.device_get(_finite_and_min(v))
        if not finite:
            raise ValueError("v contains NaN or infinite values")
        if low < 0:
            raise ValueError(f"v must be non-negative (NMF), its minimum is {low:.4g}; "
                             "factorize post-ReLU activations or shift/clip them first")
    if not jnp.issubdtype(v.dtype, jnp.floating):
        v = v.astype(jnp.float32)
    out = _nmf(v, key, rank=rank, steps=steps)
    # Under jit the values are unknown here: data the eager call refuses gives NaN, not
    # factors of the wrong sign.
    bad = (low < 0) | ~finite
    return jax.tree.map(lambda a: jnp.where(bad, jnp.nan, a), out)


@jax.jit
def _finite_and_min(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Whether every entry of `v` is finite, and its minimum."""
    return jnp.isfinite(v).all(), v.min()


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["directions", "presence", "error"], meta_fields=["site"])
@dataclasses.dataclass(frozen=True)
class NeuronGroups:
    """Neuron groups of a site.

    Attributes:
        site: the site name.
        directions: ``(k, channels)`` non-negative channel weights of each group, unit norm.
        presence: ``(b, *spatial, k)`` how strongly each group is present at each position.
        error: relative reconstruction error of the activations.
    """

    site: str
    directions: Array
    presence: Array
    error: Array


def neuron_groups(f: Callable[[Array], Array], x: Float[ArrayLike, "b ..."], *, site: str,
                  groups: int, key: Array, steps: int = 500) -> NeuronGroups:
    """Group a site's channels by NMF of its activation vectors over examples and positions.

    Args:
        f: the model.
        x: a batch of inputs whose activations are factorized.
        site: one site name (a glob must match exactly one site), with non-negative values
            (e.g. a post-ReLU activation); other values are a ValueError, or under
            ``jax.jit`` NaN groups (as :func:`nmf`).
        groups: number of groups ``k``, at most the site's channels (and the number of
            activation vectors, examples x positions); more is a ValueError.
        key: a JAX PRNG key (``jax.random.key(0)``, not an int seed) for the NMF start.
        steps: NMF update rounds.

    Returns:
        :class:`NeuronGroups`; ``direction(site, groups.directions[i])`` visualizes group i.

    Example:
        >>> g = neuron_groups(f, x, site="block1/relu_1", groups=4, key=jax.random.key(0))
        >>> render(f, [direction(g.site, d) for d in g.directions], key=key, shape=(1, 8, 8, 1))

    References:
        Olah et al. The building blocks of interpretability. Distill, 2018.
    """
    check_key(key)
    site = read_one_site(f, x, site)
    _, acts = capture(f, site)(x)
    value = acts[site]
    c = value.shape[-1]
    flat = value.reshape(-1, c)
    groups = _check_groups(groups, site, flat.shape)
    res = nmf(flat, groups, key=key, steps=steps)
    norms = jnp.maximum(jnp.linalg.norm(res.h, axis=1, keepdims=True), 1e-12)
    presence = (res.w * norms.T).reshape(*value.shape[:-1], groups)
    return NeuronGroups(site, res.h / norms, presence, res.error)


def _check_groups(groups, site: str, shape: tuple[int, int]) -> int:
    """``groups`` as an int, which must lie in ``[1, min(vectors, channels)]`` for the
    ``(vectors, channels)`` activation vectors of ``site`` (NMF finds no more components)."""
    vectors, channels = shape
    most = min(vectors, channels)
    if (isinstance(groups, bool) or not isinstance(groups, (int, np.integer))
            or not 1 <= groups <= most):
        limit = (f"its {channels} channels" if channels <= vectors else
                 f"the {vectors} activation vectors of x (examples x positions; pass more "
                 "examples)")
        raise ValueError(f"groups must be an int in [1, {most}] for site {site!r}, whose "
                         f"activations are {vectors} vectors of {channels} channels: NMF finds "
                         f"at most as many groups as {limit}; got groups={groups!r}")
    return int(groups)
