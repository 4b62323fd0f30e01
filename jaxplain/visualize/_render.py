"""Feature visualization by optimization: ``render``.

The whole optimization is one jitted ``lax.scan`` over steps with an optax optimizer; several
objectives of one structure render at once with ``vmap`` (a whole layer's channels in one call).
Images are optimised NHWC; a model that reads its images channels first is run on them through
its hashable NHWC view (:func:`jaxplain.core._channels.channels_last_view`), and the rendered
images are handed back in the model's own layout.
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
from jaxplain.core._channels import channels_last_view
from jaxplain.core._cpu import cpu_friendly
from jaxplain.core._layout import fast_convolutions
from jaxplain.visualize._objectives import (Channel, Direction, Diversity, Neuron, Objective,
                                            check_classes, leaf_values, stack, terms)
from jaxplain.visualize._param import Pixel
from jaxplain.visualize._transforms import apply_transforms


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["images", "params", "trace", "value"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class Rendering:
    """The result of :func:`render` (leading axis ``n`` only when several objectives were given).

    Attributes:
        images: ``([n,] *shape)`` the visualizations, in the parameterization's range and in the
            model's own layout (``(b, h, w, c)``, or ``(b, c, h, w)`` for a channels-first
            model), so ``f(images[i])`` runs them.
        params: the optimized parameters (pixels, spectrum or codes) of the NHWC images.
        trace: ``([n,] steps)`` the objective at each step (on the transformed images).
        value: ``([n])`` the objective on the final, untransformed images.
    """

    images: Array
    params: Array
    trace: Array
    value: Array


@functools.lru_cache(maxsize=64)
def _output_shape(f: Callable, shape: tuple[int, ...]) -> tuple[int, ...]:
    return jax.eval_shape(f, jax.ShapeDtypeStruct(shape, jnp.float32)).shape


def _wrong_shape(err: Exception, shape: tuple[int, ...]) -> ValueError:
    """The model's own error on a batch of ``shape``, as a ValueError that names ``shape``."""
    new = ValueError(f"f cannot run on a batch of shape={shape} ({type(err).__name__}: {err}); "
                     "pass shape= as the batch f takes")
    new.add_note(f"render runs f on a batch of shape={shape}, given in f's own layout: "
                 "(k, c, h, w) for a channels-first model, (k, h, w, c) otherwise")
    return new


@functools.lru_cache(maxsize=64)
def _site_shapes(f: Callable, names: tuple[str, ...], shape: tuple[int, ...]):
    g = capture(f, list(names))
    _, acts = jax.eval_shape(g, jax.ShapeDtypeStruct(shape, jnp.float32))
    return {k: v.shape for k, v in acts.items()}


def _channels_last(f: Callable, shape: tuple[int, ...]):
    """``(g, nhwc, axis)``: for a model that reads the batch ``shape`` (4-d, in its own layout)
    with its channels on ``axis`` (1 for NCHW), its hashable NHWC view ``g`` and ``shape`` moved
    to NHWC; otherwise ``(f, shape, None)``. A ``shape`` that ``f`` cannot run on is a
    ValueError naming it, with the model's own error as its cause."""
    try:
        g, axis = channels_last_view(f, jax.ShapeDtypeStruct(shape, jnp.float32))
        _output_shape(g, _nhwc(shape, axis))
    except Exception as err:
        raise _wrong_shape(err, shape) from err
    if axis is None:
        return f, shape, None
    return g, _nhwc(shape, axis), axis


def _nhwc(shape: tuple[int, ...], axis: int | None) -> tuple[int, ...]:
    return shape if axis is None else (*shape[:axis], *shape[axis + 1:], shape[axis])


def _check_images(param, shape: tuple[int, ...]) -> None:
    """The parameterization must make NHWC images of ``shape`` (a generator's output, too)."""
    made = jax.eval_shape(lambda k: param.image(param.init(k, shape), shape), jax.random.key(0))
    if made.shape != shape:
        raise ValueError(f"param makes images shaped {made.shape}; render optimises NHWC images "
                         f"shaped {shape} (a CodeSpace generator returns (k, h, w, c) images, "
                         "channels last, also for a channels-first model)")


def _validate(f, objective: Objective, shape: tuple[int, ...]) -> None:
    names = objective.sites()
    parts = list(terms(objective))
    check_classes(objective, _output_shape(f, shape)[-1])
    if any(isinstance(t, Diversity) for t in parts) and shape[0] < 2:
        raise ValueError(f"a diversity term needs at least 2 images per objective; shape[0] is "
                         f"{shape[0]} (pass shape=(k, h, w, c) with k >= 2)")
    if not names:
        return
    shapes = _site_shapes(f, tuple(names), tuple(shape))
    for t in parts:
        if isinstance(t, (Channel, Neuron)):
            n = shapes[t.site][-1]
            vals = leaf_values(t.index)
            if vals is not None and any(not 0 <= int(i) < n for i in vals):
                raise ValueError(f"channel index out of range for site {t.site!r} with {n} "
                                 f"channels: got {vals}")
        if isinstance(t, Neuron):
            spatial = shapes[t.site][1:-1]
            vals = leaf_values(t.position)
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
        f: the model, a pure function from a batch to logits. A model that reads its images
            channels first (its first convolution takes the channels on axis 1, as an Equinox
            CNN does) is run on the NHWC images through its NHWC view; its sites are presented
            channels-last, so ``channel(site, i)`` means filter ``i``.
        objective: an :class:`Objective` or a sequence of them (same structure).
        key: PRNG key (start point and the transforms' draws).
        shape: the image batch rendered *per objective*, in ``f``'s own layout: ``(k, h, w, c)``,
            or ``(k, c, h, w)`` for a channels-first model; ``k >= 2`` to use a
            :func:`diversity` term. The parameterization, transforms, regularizers and the
            objective's image argument work on the NHWC images ``(k, h, w, c)`` either way.
        steps: optimization steps.
        param: the parameterization (:class:`Pixel` by default, :class:`Fourier`,
            :class:`CodeSpace`).
        transforms: e.g. ``(Jitter(1), Scale(), Rotate())``; hashable values.
        regularizers: penalties such as ``(L2(0.01), TotalVariation(0.05), Blur(1.0))`` or a
            :func:`gaussian_prior`.
        learning_rate: Adam's step size when ``optimizer`` is None.
        optimizer: any optax optimizer (a hashable value: create it once and reuse it).

    Returns:
        A :class:`Rendering` with ``images`` in ``f``'s own layout (shaped ``shape``); with a
        sequence of ``n`` objectives every field gets a leading axis ``n``.

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
    f, shape, axis = _channels_last(f, shape)
    _check_images(param, shape)
    _validate(f, objective, shape)
    optimizer = _adam(float(learning_rate)) if optimizer is None else optimizer
    out = _render(objective, param, regularizers, key, f=f, shape=shape, steps=steps,
                  transforms=transforms, optimizer=optimizer, batched=batched)
    if axis is None:
        return out
    return dataclasses.replace(out, images=jnp.moveaxis(out.images, -1, axis - 4))
