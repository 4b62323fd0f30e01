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
    """Multiplicative updates on ``v / max(v)``: the updates' ``eps`` is then small next to
    every denominator at any scale of ``v`` (it had swamped data below ~1e-8); ``w`` is scaled
    back, so ``w @ h`` approximates ``v`` itself."""
    n, d = v.shape
    top = jnp.max(v)
    v = v / jnp.where(top > 0, top, 1)
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
    return NMF(w * top, h, err)


def nmf(v: Float[ArrayLike, "n d"], rank: int, *, key: Array, steps: int = 500) -> NMF:
    """Factorize a non-negative matrix ``v ~= w @ h`` with multiplicative updates.

    Args:
        v: ``(n, d)`` non-negative, finite data, not all zero; anything else is a ValueError,
            or under ``jax.jit`` (where the values are not known) an all-NaN result. The
            result does not depend on the scale of ``v`` (``h`` is that of ``v / max(v)``).
        rank: number of components ``k``, an int (Python or NumPy).
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
    rank = _check_count(rank, "rank", min(v.shape), f" (min(n, d) for v of shape {v.shape})")
    return _checked_nmf(v, rank, key, steps, what="v")


def _checked_nmf(v: Array, rank: int, key: Array, steps: int, *, what: str) -> NMF:
    """:func:`_nmf` of ``v`` (``(n, d)``, ``rank`` checked), its values checked where concrete
    (``what`` names ``v`` in the errors), all NaN under jit where they would be refused."""
    steps = _check_count(steps, "steps", None)
    check_key(key)
    if isinstance(v, jax.core.Tracer):
        low, high = _min_and_max(v)
        finite = jnp.isfinite(low) & jnp.isfinite(high)
    else:
        with jax.ensure_compile_time_eval():  # two scalars read back, not the matrix
            low, high = jax.device_get(_min_and_max(v))
        finite = np.isfinite(low) and np.isfinite(high)
        if not finite:
            raise ValueError(f"{what} contains NaN or infinite values")
        if low < 0:
            raise ValueError(f"{what} must be non-negative (NMF), its minimum is {low:.4g}; "
                             "factorize post-ReLU activations or shift/clip them first")
        if high == 0:
            raise ValueError(f"{what} is all zero: nothing to factorize (the relative error "
                             "would be 0/0 and every component 0); for a site whose units are "
                             "all dead on these inputs, pick another site or other inputs")
    if not jnp.issubdtype(v.dtype, jnp.floating):
        v = v.astype(jnp.float32)
    out = _nmf(v, key, rank=rank, steps=steps)
    # Under jit the values are unknown here: data the eager call refuses gives NaN, not
    # factors of the wrong sign (or zero "components" of all-zero data).
    bad = (low < 0) | ~finite | (high == 0)
    return jax.tree.map(lambda a: jnp.where(bad, jnp.nan, a), out)


@jax.jit
def _min_and_max(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The minimum and maximum of `v` (NaN or infinite where `v` has a non-finite entry)."""
    return v.min(), v.max()


def _check_count(value, name: str, most: int | None, why: str = "") -> int:
    """``value`` as an int (Python or NumPy, not bool) in ``[1, most]`` (``[1, inf)`` when
    ``most`` is None), else a ValueError naming ``name`` (``why`` says what bounds it)."""
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
            or (most is not None and value > most)):
        bound = "a positive int" if most is None else f"an int in [1, {most}]{why}"
        raise ValueError(f"{name} must be {bound}; got {name}={value!r}")
    return int(value)


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
            (e.g. a post-ReLU activation), not all zero on ``x``; other values (a pre-activation
            site, a dead one) are a ValueError, or under ``jax.jit`` NaN groups (as
            :func:`nmf`).
        groups: number of groups ``k``, an int (Python or NumPy), at most the site's channels
            (and the number of activation vectors, examples x positions); more is a ValueError.
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
    vectors = flat.shape[0]
    limit = (f"its {c} channels" if c <= vectors else f"the {vectors} activation vectors of x "
             "(examples x positions; pass more examples)")
    groups = _check_count(groups, "groups", min(vectors, c),
                          f" for site {site!r}, whose activations are {vectors} vectors of {c} "
                          f"channels: NMF finds at most as many groups as {limit}")
    res = _checked_nmf(flat, groups, key, steps, what=f"the activation matrix of site {site!r}")
    norms = jnp.maximum(jnp.linalg.norm(res.h, axis=1, keepdims=True), 1e-12)
    presence = (res.w * norms.T).reshape(*value.shape[:-1], groups)
    return NeuronGroups(site, res.h / norms, presence, res.error)
