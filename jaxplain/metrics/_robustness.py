"""Robustness of explanations: max-sensitivity, continuity and the local Lipschitz estimate.

Each metric evaluates the explanation method on ``samples`` perturbed copies of the batch,
each copy an ``x``-shaped batch (the method vmapped over the copies, ``batch_size`` copies per
call), and reduces per example. The perturbations of example ``i`` are drawn from its own key
``jax.random.fold_in(key, i)`` as a ``(samples, *x.shape[1:])`` array (:func:`draw_noise`):
``jax.random.uniform(k, shape, minval=-radius, maxval=radius)`` for max-sensitivity and
``stdev * jax.random.normal(k, shape)`` for continuity and the Lipschitz estimate. So an
example's score depends on the key and its place in the batch, not on the other examples or
the batch size (``x[:k]`` scores as the first ``k`` rows of ``x``), and a reference
implementation can regenerate exactly the same inputs. As every copy of example ``i`` is
explained at row ``i`` of a batch shaped like ``x``, a keyed random method (SmoothGrad,
GradientSHAP: noise drawn by row position) gives each copy the same randomness as ``x`` itself,
so the score measures the method's sensitivity to the input, not its Monte Carlo noise.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxplain.metrics import _checks as checks

Method = Callable[[Callable[[Array], Array], Array, Array], Array]


def _ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` with ``0 / 0 = 0`` and ``x / 0 = inf``; NaN where either is NaN (a map
    holding NaN must not score as perfectly robust)."""
    safe = jnp.where(den > 0, den, 1.0)
    ratio = jnp.where(den > 0, num / safe, jnp.where(num > 0, jnp.inf, 0.0))
    return jnp.where(jnp.isnan(num) | jnp.isnan(den), jnp.nan, ratio)


@functools.partial(jax.jit, static_argnames=("order", "relative"))
def _score(a0, chunks, eps, *, order, relative):
    """``max_s ||a_s − a0||_order / (||a0||₂ if relative else ||eps_s||₂)`` per example."""
    wide = jnp.promote_types(a0.dtype, jnp.float32)
    a0 = a0.astype(wide)
    a = jnp.concatenate(chunks).astype(wide)                           # (samples, *x.shape)
    num = _norm(a - a0[None], order)
    den = _norm(a0[None], 2) if relative else _norm(eps, 2)
    return _ratio(num, den).max(axis=0)


def _norm(a: jax.Array, order: int) -> jax.Array:
    """The ``order``-norm of each ``(samples, batch)`` entry over its remaining axes."""
    return jnp.linalg.norm(a.reshape(a.shape[0], a.shape[1], -1), ord=order, axis=-1)


def draw_noise(key, scale, example: jax.Array, samples: int, kind: str) -> jax.Array:
    """``(samples, *example.shape)`` perturbations of one example, drawn from `key` in its dtype
    widened to float32 at least (a bfloat16 example gets the float32 draws of the same key)."""
    shape, wide = (samples,) + example.shape, jnp.promote_types(example.dtype, jnp.float32)
    if kind == "uniform":
        return jax.random.uniform(key, shape, wide, minval=-scale, maxval=scale)
    return scale * jax.random.normal(key, shape, wide)


@functools.partial(jax.jit, static_argnames=("samples", "noise_kind", "chunk"))
def _inputs(key, scale, x, *, samples, noise_kind, chunk):
    """The draws ``(samples, *x.shape)`` and the noisy copies, ``chunk`` at a time."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(x.shape[0]))
    draw = lambda k, xi: draw_noise(k, scale, xi, samples, noise_kind)  # noqa: E731
    eps = jax.vmap(draw, out_axes=1)(keys, x)                          # (samples, *x.shape)
    xs = (x[None] + eps).astype(x.dtype)
    return eps, tuple(xs[s : s + chunk] for s in range(0, samples, chunk))


def _sensitivity(f, method, x, target, key, scale, *, samples, noise, batch_size, order,
                 relative):
    """Explain the perturbed copies and reduce.

    ``method`` is vmapped over the copies, ``batch_size`` of them per call (:func:`_explain`):
    each call of ``method`` (and of ``f``) gets an ``x``-shaped batch, so example ``i``'s copies
    sit at row ``i`` as in the unperturbed call, and a model that closes over arrays with
    ``x``'s batch axis works as it does for the method itself. The noise and the reduction are
    each one compiled call.
    """
    chunk = samples if batch_size is None else min(batch_size, samples)
    eps, chunks = _inputs(key, scale, x, samples=samples, noise_kind=noise, chunk=chunk)
    a0 = method(f, x, target)
    out = tuple(_explain(f, method, xc, target) for xc in chunks)
    return _score(a0, out, eps, order=order, relative=relative)


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
    x: Float[Array, "batch *shape"],
    target: Int[Array, " batch"] | int,
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
        batch_size: Perturbed copies of the batch explained per call of the vmapped method
            (``None``: all at once); it bounds memory and does not change the scores. ``1``
            calls the method as it is, one copy at a time (for a method JAX cannot trace).

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
    x: Float[Array, "batch *shape"],
    target: Int[Array, " batch"] | int,
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
    x: Float[Array, "batch *shape"],
    target: Int[Array, " batch"] | int,
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
