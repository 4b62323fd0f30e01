"""Feature visualization by optimization: ``render``.

The whole optimization is one jitted ``lax.scan`` over steps with an optax optimizer; several
objectives of one structure render at once with ``vmap`` (a whole layer's channels in one call).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array

from jaxplain.core import capture
from jaxplain.core._channels import input_channel_axis
from jaxplain.core._cpu import cpu_friendly
from jaxplain.core._layout import fast_convolutions
from jaxplain.core._program import trace
from jaxplain.visualize._objectives import (Channel, Direction, Diversity, Neuron, Objective,
                                            Scaled, Sum, stack)
from jaxplain.visualize._param import Pixel
from jaxplain.visualize._transforms import apply_transforms


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["images", "params", "trace", "value"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class Rendering:
    """The result of :func:`render` (leading axis ``n`` only when several objectives were given).

    Attributes:
        images: ``([n,] b, h, w, c)`` the visualizations, in the parameterization's range.
        params: the optimized parameters (pixels, spectrum or codes).
        trace: ``([n,] steps)`` the objective at each step (on the transformed images).
        value: ``([n])`` the objective on the final, untransformed images.
    """

    images: Array
    params: Array
    trace: Array
    value: Array


def _terms(obj: Objective):
    if isinstance(obj, Sum):
        for t in obj.terms:
            yield from _terms(t)
    elif isinstance(obj, Scaled):
        yield from _terms(obj.term)
    else:
        yield obj


def _leaf_values(v) -> list[int] | None:
    try:
        import numpy as np

        return np.asarray(v).reshape(-1).tolist()
    except Exception:  # a tracer: validated by the caller's own checks
        return None


@functools.lru_cache(maxsize=64)
def _site_shapes(f: Callable, names: tuple[str, ...], shape: tuple[int, ...]):
    g = capture(f, list(names))
    _, acts = jax.eval_shape(g, jax.ShapeDtypeStruct(shape, jnp.float32))
    return {k: v.shape for k, v in acts.items()}


def _check_layout(f: Callable, shape: tuple[int, ...]) -> None:
    """Refuse a model that reads its images channels first (its first convolution's input
    feature axis is 1), whether `shape` is given NCHW or NHWC: renderings are NHWC images."""
    if len(shape) != 4:
        return
    k, h, w, c = shape
    for candidate in (shape, (k, c, h, w)):
        try:
            program = trace(f, jax.ShapeDtypeStruct(candidate, jnp.float32))
        except Exception:  # noqa: BLE001 - not the model's shape: try the other layout
            continue
        if input_channel_axis(program) == 1:
            raise ValueError(
                "this model reads its images channels first (NCHW); render optimises NHWC "
                "images: pass `lambda z: f(jnp.moveaxis(z, -1, 1))` as the model and "
                "shape=(k, h, w, c)")
        return


def _validate(f, objective: Objective, shape: tuple[int, ...]) -> None:
    names = objective.sites()
    terms = list(_terms(objective))
    if any(isinstance(t, Diversity) for t in terms) and shape[0] < 2:
        raise ValueError(f"a diversity term needs at least 2 images per objective; shape[0] is "
                         f"{shape[0]} (pass shape=(k, h, w, c) with k >= 2)")
    if not names:
        return
    shapes = _site_shapes(f, tuple(names), tuple(shape))
    for t in terms:
        if isinstance(t, (Channel, Neuron)):
            n = shapes[t.site][-1]
            vals = _leaf_values(t.index)
            if vals is not None and any(not 0 <= int(i) < n for i in vals):
                raise ValueError(f"channel index out of range for site {t.site!r} with {n} "
                                 f"channels: got {vals}")
        if isinstance(t, Neuron):
            spatial = shapes[t.site][1:-1]
            vals = _leaf_values(t.position)
            if vals is not None:
                pos = [vals[i:i + len(spatial)] for i in range(0, len(vals), len(spatial))]
                if any(not all(0 <= p < s for p, s in zip(q, spatial)) for q in pos):
                    raise ValueError(f"neuron position out of range for site {t.site!r} with "
                                     f"spatial shape {spatial}: got {pos}")
        if isinstance(t, Direction):
            n = shapes[t.site][-1]
            if jnp.shape(t.vector)[-1] != n:
                raise ValueError(f"direction vector for site {t.site!r} must have {n} entries "
                                 f"(one per channel), got shape {jnp.shape(t.vector)}")


def _render_one(objective, param, regularizers, key, *, f, shape, steps, transforms, optimizer):
    names = objective.sites()
    g = cpu_friendly(capture(f, list(names)) if names else (lambda x: (f(x), {})))

    def evaluate(objective, param, regularizers, params, k):
        images = param.image(params, shape)
        seen = apply_transforms(transforms, k, images) if k is not None else images
        y, acts = g(seen)
        value = objective(acts, y, seen)
        penalty = sum((jnp.sum(r(images)) for r in regularizers), jnp.zeros(()))
        return penalty - value, value

    # The loop body's convolution gradients in XLA:CPU's fast layout (see jaxplain.core._layout),
    # after the forward pass's own CPU rewrites (jaxplain.core._cpu).
    gradient = fast_convolutions(jax.value_and_grad(evaluate, argnums=3, has_aux=True))
    k_init, k_steps = jax.random.split(key)
    params = param.init(k_init, shape)

    def step(carry, k):
        params, state = carry
        (_, value), grads = gradient(objective, param, regularizers, params, k)
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), value

    (params, _), trace = jax.lax.scan(step, (params, optimizer.init(params)),
                                      jax.random.split(k_steps, steps))
    _, value = evaluate(objective, param, regularizers, params, None)
    return Rendering(param.image(params, shape), params, trace, value)


@functools.lru_cache(maxsize=16)
def _adam(learning_rate: float) -> optax.GradientTransformation:
    return optax.adam(learning_rate)  # one value per rate, so repeated calls reuse the compile


@functools.partial(jax.jit, static_argnames=("f", "shape", "steps", "transforms", "optimizer",
                                             "batched"))
def _render(objective, param, regularizers, key, *, f, shape, steps, transforms, optimizer,
            batched):
    run = functools.partial(_render_one, f=f, shape=shape, steps=steps, transforms=transforms,
                            optimizer=optimizer)
    if not batched:
        return run(objective, param, regularizers, key)
    n = jax.tree_util.tree_leaves(objective)[0].shape[0]
    keys = jax.random.split(key, n)
    return jax.vmap(run, in_axes=(0, None, None, 0))(objective, param, regularizers, keys)


def render(f: Callable[[Array], Array], objective: Objective | Sequence[Objective], *,
           key: Array, shape: Sequence[int], steps: int = 256, param: Any = None,
           transforms: Sequence[Callable] = (), regularizers: Sequence[Callable] = (),
           learning_rate: float = 0.05,
           optimizer: optax.GradientTransformation | None = None) -> Rendering:
    """Render inputs that maximize ``objective`` (minus the regularizers) by gradient ascent.

    Each step: parameters -> images (``param``) -> random transforms (with that step's key) ->
    ``f`` with the objective's sites captured -> objective; the penalties of ``regularizers``
    are taken on the untransformed images. The loop is one jitted ``lax.scan``; a sequence of
    objectives with one structure (e.g. ``[channel(site, i) for i in range(64)]``) is stacked
    and rendered with ``vmap`` in the same compiled call.

    Args:
        f: the model, a pure function from a batch (NHWC) to logits; a channels-first model is
            refused (render ``lambda z: f(jnp.moveaxis(z, -1, 1))``).
        objective: an :class:`Objective` or a sequence of them (same structure).
        key: PRNG key (start point and the transforms' draws).
        shape: the image batch rendered *per objective*, ``(k, h, w, c)``; ``k >= 2`` to use a
            :func:`diversity` term.
        steps: optimization steps.
        param: the parameterization (:class:`Pixel` by default, :class:`Fourier`,
            :class:`CodeSpace`).
        transforms: e.g. ``(Jitter(1), Scale(), Rotate())``; hashable values.
        regularizers: penalties such as ``(L2(0.01), TotalVariation(0.05), Blur(1.0))`` or a
            :func:`gaussian_prior`.
        learning_rate: Adam's step size when ``optimizer`` is None.
        optimizer: any optax optimizer (a hashable value: create it once and reuse it).

    Returns:
        A :class:`Rendering`; with a sequence of ``n`` objectives every field gets a leading
        axis ``n``.

    Example:
        >>> objs = [channel("block1/relu_1", i) for i in range(16)]
        >>> out = render(f, objs, key=jax.random.key(0), shape=(1, 8, 8, 1), steps=128,
        ...              param=Fourier(), transforms=(Jitter(1),))
        >>> out.images.shape
        (16, 1, 8, 8, 1)

    References:
        Erhan et al. Visualizing higher-layer features of a deep network, 2009.
        Olah, Mordvintsev, Schubert. Feature visualization. Distill, 2017.
    """
    batched = not isinstance(objective, Objective)
    if batched:
        if isinstance(objective, (str, bytes)) or not isinstance(objective, Sequence):
            raise TypeError("objective must be an Objective or a sequence of Objectives, got "
                            f"{type(objective).__name__}")
        objective = stack(objective)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise ValueError(f"shape must be the per-objective input batch, e.g. (k, h, w, c) with "
                         f"positive sizes, got {shape}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    param = Pixel() if param is None else param
    transforms = tuple(transforms)
    if transforms and len(shape) != 4:
        raise ValueError(f"transforms need NHWC images, got shape {shape}")
    regularizers = tuple(regularizers)
    for r in (*transforms, *regularizers):
        if not callable(r):
            raise TypeError(f"transforms and regularizers must be callable values, got {r!r}")
    _check_layout(f, shape)
    _validate(f, objective, shape)
    optimizer = _adam(float(learning_rate)) if optimizer is None else optimizer
    return _render(objective, param, regularizers, key, f=f, shape=shape, steps=steps,
                   transforms=transforms, optimizer=optimizer, batched=batched)
