"""Robustness of explanations: max-sensitivity, continuity and the local Lipschitz estimate.

Each metric evaluates the explanation method on ``samples`` perturbed copies of the batch,
each copy an ``x``-shaped batch (the method vmapped over the copies, ``batch_size`` copies per
call), and reduces per example. The perturbations of example ``i`` are drawn from its own key
``jax.random.fold_in(key, i)`` as a ``(samples, *x.shape[1:])`` array (:func:`draw_noise`):
``jax.random.uniform(k, shape, minval=-radius, maxval=radius)`` for max-sensitivity and
``stdev * jax.random.normal(k, shape)`` for continuity and the Lipschitz estimate. So an
example's score depends on the key and its place in the batch, not on the other examples or
the batch size (``x[:k]`` scores as the first ``k`` rows of ``x``), and a reference
implementation can regenerate exactly the same inputs. The array is never held: each chunk of
copies makes its own rows of it (:func:`draw_row`), is explained and is reduced to its largest
change before the next, so memory holds one chunk. As every copy of example ``i`` is
explained at row ``i`` of a batch shaped like ``x``, a keyed random method (SmoothGrad,
GradientSHAP: noise drawn by row position) gives each copy the same randomness as ``x`` itself,
so the score measures the method's sensitivity to the input, not its Monte Carlo noise.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry_2x32
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.attribution._common import chunked_map
from jaxplain.attribution._value_checks import is_traced
from jaxplain.metrics import _checks as checks

Method = Callable[[Callable[[Array], Array], Array, Array], Array]


def _ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` with ``0 / 0 = 0`` and ``x / 0 = inf``; NaN where either is NaN (a map
    holding NaN must not score as perfectly robust)."""
    safe = jnp.where(den > 0, den, 1.0)
    ratio = jnp.where(den > 0, num / safe, jnp.where(num > 0, jnp.inf, 0.0))
    return jnp.where(jnp.isnan(num) | jnp.isnan(den), jnp.nan, ratio)


def _norm(a: jax.Array, order: int) -> jax.Array:
    """``(batch,)``: the ``order``-norm of each example of ``a``, over its remaining axes."""
    return jnp.linalg.norm(a.reshape(a.shape[0], -1), ord=order, axis=-1)


def _change(a0, a, eps_norm, *, order, relative):
    """``(batch,)``: ``||a − a0||_order / (||a0||₂ if relative else ||ε||₂)`` for the map ``a`` of
    one copy, in float32 at least."""
    wide = jnp.promote_types(a0.dtype, jnp.float32)
    a0, a = jnp.asarray(a0, wide), jnp.asarray(a, wide)
    return _ratio(_norm(a - a0, order), _norm(a0, 2) if relative else eps_norm)


def draw_noise(key, scale, example: jax.Array, samples: int, kind: str) -> jax.Array:
    """``(samples, *example.shape)`` perturbations of one example, drawn from `key` in its dtype
    widened to float32 at least (a bfloat16 example gets the float32 draws of the same key)."""
    shape, wide = (samples,) + example.shape, jnp.promote_types(example.dtype, jnp.float32)
    if kind == "uniform":
        return jax.random.uniform(key, shape, wide, minval=-scale, maxval=scale)
    return scale * jax.random.normal(key, shape, wide)


def draw_row(key, scale, example: jax.Array, s: jax.Array, samples: int, kind: str) -> jax.Array:
    """Row `s` of :func:`draw_noise`, ``example.shape``, made without the other rows.

    With a threefry key (JAX's default, its bits partitionable: the default since JAX 0.5) the
    bits of element ``j`` of a draw are the hash of counter ``j``, so row `s` hashes the counters
    ``s * size + arange(size)`` and converts them to floats as ``jax.random.uniform`` and
    ``jax.random.normal`` do: the same numbers. For any other key the whole draw is made and row
    `s` taken (a compiled loop makes it once, ``samples`` times an example's memory)."""
    wide = jnp.promote_types(example.dtype, jnp.float32)
    size, nbits, nmant = example.size, jnp.finfo(wide).bits, jnp.finfo(wide).nmant
    if (str(jax.random.key_impl(key)) != "threefry2x32" or samples * size > 2 ** 32
            or not jax.config.jax_threefry_partitionable):
        return jnp.take(draw_noise(key, scale, example, samples, kind), s, axis=0)
    counter = jnp.asarray(s, jnp.uint32) * jnp.uint32(size) + jnp.arange(size, dtype=jnp.uint32)
    # threefry_2x32 hashes the pairs (count[j], count[size + j]): the counters' high words (0)
    # and low words, giving the two words of each hash in the same two halves.
    words = threefry_2x32(tuple(jax.random.key_data(key)),
                          jnp.concatenate([jnp.zeros(size, jnp.uint32), counter]))
    hi, lo = words[:size], words[size:]
    uint = jnp.dtype(f"uint{nbits}")
    bits = hi ^ lo if nbits == 32 else (hi.astype(uint) << uint.type(32)) | lo.astype(uint)
    one = jnp.asarray(np.array(1.0, wide).view(uint), uint)
    unit = jax.lax.bitcast_convert_type((bits >> uint.type(nbits - nmant)) | one, wide) - 1
    if kind == "uniform":  # [−scale, scale), as jax.random.uniform(minval=-scale, maxval=scale)
        lower, upper = jnp.asarray(-scale, wide), jnp.asarray(scale, wide)
    else:  # N(0, 1) as jax.random.normal: √2 erf⁻¹ of a uniform in (−1, 1)
        lower, upper = np.nextafter(np.array(-1.0, wide), np.array(0.0, wide)), np.array(1.0, wide)
    u = jnp.maximum(lower, unit * (upper - lower) + lower).reshape(example.shape)
    return u if kind == "uniform" else scale * (np.array(np.sqrt(2), wide) * jax.lax.erf_inv(u))


def _copy(key, scale, x, s, *, samples, kind):
    """Copy `s` of the batch, ``x + ε_s`` in ``x``'s dtype, and ``||ε_s||₂`` ``(batch,)``:
    example ``i``'s draw is row `s` of its draws from ``fold_in(key, i)``."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(x.shape[0]))
    eps = jax.vmap(lambda k, xi: draw_row(k, scale, xi, s, samples, kind))(keys, x)
    return (x + eps).astype(x.dtype), _norm(eps, 2)


@functools.partial(jax.jit, static_argnames=("samples", "kind", "size"))
def _copies(key, scale, x, start, *, samples, kind, size):
    """Copies ``start .. start + size − 1`` (:func:`_copy`): ``(size, *x.shape)`` and
    ``(size, batch)``."""
    copy = functools.partial(_copy, key, scale, x, samples=samples, kind=kind)
    return jax.vmap(copy)(start + jnp.arange(size))


@functools.partial(jax.jit, static_argnames=("order", "relative"))
def _changes(a0, a, eps_norm, *, order, relative):
    """The largest :func:`_change` of a chunk of copies' maps ``(c, *x.shape)``: ``(batch,)``."""
    change = functools.partial(_change, a0, order=order, relative=relative)
    return jax.vmap(change)(a, eps_norm).max(axis=0)


def _sensitivity(f, method, x, target, key, scale, *, samples, noise, batch_size, order,
                 relative):
    """The largest change over the ``samples`` perturbed copies of the batch, ``(batch,)``.

    Each copy is an ``x``-shaped batch given to ``method`` (and so to ``f``) as it is, so example
    ``i``'s copies sit at row ``i`` as in the unperturbed call, and a model that closes over
    arrays with ``x``'s batch axis works as it does for the method itself. ``batch_size`` copies
    are made, explained (``method`` vmapped over them, :func:`_explain`) and reduced to their
    largest change at a time, so memory holds one chunk whatever ``samples``: in a Python loop
    of compiled calls when the arguments are concrete (``method`` called as it is, so a second
    call compiles nothing), in ``lax.map`` inside the caller's ``jit``.
    """
    a0 = method(f, x, target)
    chunk = samples if batch_size is None else min(batch_size, samples)
    if not any(is_traced(v) for v in (x, target, key, a0)):
        maxima = []
        for start in range(0, samples, chunk):
            size = min(chunk, samples - start)
            copies, eps_norm = _copies(key, scale, x, start, samples=samples, kind=noise,
                                       size=size)
            maxima.append(_changes(a0, _explain(f, method, copies, target), eps_norm,
                                   order=order, relative=relative))
        return jnp.stack(maxima).max(axis=0)

    def change(s):
        copy, eps_norm = _copy(key, scale, x, s, samples=samples, kind=noise)
        return _change(a0, method(f, copy, target), eps_norm, order=order, relative=relative)

    s = jnp.arange(samples)
    changes = jax.vmap(change)(s) if chunk == samples else chunked_map(change, s, chunk)
    return changes.max(axis=0)


def _explain(f, method, copies, target):
    """``(c, *x.shape)``: ``method`` on each copy ``copies[s]``, an ``x``-shaped batch; vmapped
    over the copies, or called as it is on a single copy (so that ``batch_size=1`` also runs a
    method that JAX cannot trace, one written in NumPy)."""
    if copies.shape[0] == 1:
        return jnp.asarray(method(f, copies[0], target))[None]
    try:
        return jax.vmap(lambda xs: method(f, xs, target))(copies)
    except jax.errors.JAXTypeError as err:  # x itself was explained: vmap is what failed
        raise TypeError(
            f"method is vmapped over the noisy copies of the batch ({copies.shape[0]} at a "
            f"time) and could not be traced ({type(err).__name__}: a method in NumPy, or one "
            "that reads the values of x). Pass batch_size=1 to call it on one copy, a batch "
            "shaped like x, at a time.") from err


def _prepare(f, x, target, method, key, scale, scale_name, samples, batch_size):
    x, _, target = checks.checked(f, x, target)
    checks.check_method(method)
    checks.check_positive_int(samples, "samples")
    if not isinstance(key, jax.Array) or not (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or key.shape == (2,)
    ):
        raise TypeError(f"key must be a PRNG key (jax.random.key(0)), got {key!r}")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale <= 0:
        raise ValueError(f"{scale_name} must be a positive number, got {scale!r}")
    return x, target, checks.check_batch_size(batch_size)


def max_sensitivity(
    f: Callable[[Array], Array],
    x: Float[ArrayLike, "batch *shape"],
    target: Int[ArrayLike, " batch"] | Int[ArrayLike, ""],
    method: Method,
    *,
    key: Array,
    radius: float = 0.02,
    samples: int = 10,
    batch_size: int | None = None,
) -> Float[Array, " batch"]:
    """Max-sensitivity: the largest relative change of the explanation under uniform noise.

    ``max_s ||Φ(x + δ_s) − Φ(x)||₂ / ||Φ(x)||₂`` with ``δ_s ~ U[−radius, radius]`` elementwise
    (the normalised form Quantus reports). 0 for an explanation that does not move.

    Args:
        f: Maps a batch to logits.
        x: ``(batch, *shape)`` inputs.
        target: ``(batch,)`` classes or one int; kept fixed under the perturbations.
        method: ``method(f, x, target) -> attribution`` shaped like ``x``.
        key: PRNG key for the noise; example ``i``'s comes from ``jax.random.fold_in(key, i)``,
            so its score does not depend on the other examples.
        radius: Half-width of the uniform noise.
        samples: Number of perturbations.
        batch_size: Perturbed copies of the batch drawn, explained (one call of the vmapped
            method) and reduced at a time (``None``: all at once). Memory holds one chunk,
            ``batch_size`` copies with their draws and maps, whatever ``samples``, also inside
            your ``jit``; the scores do not depend on it. ``1`` calls the method as it is, one
            copy at a time (for a method JAX cannot trace; outside ``jit``).

    Returns:
        ``(batch,)`` max-sensitivity per example.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda x: x @ jnp.array([[1.0, -1.0], [2.0, 0.0]])
        >>> grad = lambda f, x, t: jax.grad(lambda x: f(x)[jnp.arange(len(x)), t].sum())(x)
        >>> max_sensitivity(f, jnp.ones((2, 2)), 0, grad, key=jax.random.key(0)).tolist()
        [0.0, 0.0]

    References:
        Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019.
    """
    x, target, batch_size = _prepare(f, x, target, method, key, radius, "radius", samples,
                                     batch_size)
    return _sensitivity(f, method, x, target, key, float(radius), samples=samples,
                        noise="uniform", batch_size=batch_size, order=2, relative=True)


def local_lipschitz(
    f: Callable[[Array], Array],
    x: Float[ArrayLike, "batch *shape"],
    target: Int[ArrayLike, " batch"] | Int[ArrayLike, ""],
    method: Method,
    *,
    key: Array,
    stdev: float = 0.1,
    samples: int = 10,
    batch_size: int | None = None,
) -> Float[Array, " batch"]:
    """The local Lipschitz estimate ``max_s ||Φ(x') − Φ(x)||₂ / ||x' − x||₂``.

    ``x' = x + ε_s`` with ``ε_s ~ N(0, stdev²)`` elementwise: a sampled lower bound of the
    explanation's Lipschitz constant around ``x``. Arguments as in :func:`max_sensitivity`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda x: x @ jnp.array([[3.0], [4.0]])
        >>> gxi = lambda f, x, t: x * jnp.array([3.0, 4.0])
        >>> float(local_lipschitz(f, jnp.ones((1, 2)), 0, gxi, key=jax.random.key(0))[0]) <= 4.0
        True

    References:
        Alvarez-Melis, Jaakkola, "On the Robustness of Interpretability Methods", ICML WHI
        workshop 2018.
    """
    x, target, batch_size = _prepare(f, x, target, method, key, stdev, "stdev", samples,
                                     batch_size)
    return _sensitivity(f, method, x, target, key, float(stdev), samples=samples,
                        noise="normal", batch_size=batch_size, order=2, relative=False)


def continuity(
    f: Callable[[Array], Array],
    x: Float[ArrayLike, "batch *shape"],
    target: Int[ArrayLike, " batch"] | Int[ArrayLike, ""],
    method: Method,
    *,
    key: Array,
    stdev: float = 0.1,
    samples: int = 10,
    batch_size: int | None = None,
) -> Float[Array, " batch"]:
    """Explanation continuity ``max_s ||R(x') − R(x)||₁ / ||x' − x||₂`` (lower is smoother).

    Montavon et al. define continuity by this ratio over pairs of nearby inputs; we sample the
    pairs as ``x' = x + ε_s``, ``ε_s ~ N(0, stdev²)`` (our choice of neighbourhood).
    Arguments as in :func:`max_sensitivity`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda x: x @ jnp.array([[3.0], [4.0]])
        >>> grad = lambda f, x, t: jnp.broadcast_to(jnp.array([3.0, 4.0]), x.shape)
        >>> continuity(f, jnp.ones((1, 2)), 0, grad, key=jax.random.key(0)).tolist()
        [0.0]

    References:
        Montavon, Samek, Müller, "Methods for Interpreting and Understanding Deep Neural
        Networks", Digital Signal Processing 73, 2018.
    """
    x, target, batch_size = _prepare(f, x, target, method, key, stdev, "stdev", samples,
                                     batch_size)
    return _sensitivity(f, method, x, target, key, float(stdev), samples=samples,
                        noise="normal", batch_size=batch_size, order=1, relative=False)
