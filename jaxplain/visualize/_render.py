"""Feature visualization by optimization: ``render``.

The whole optimization is one jitted ``lax.scan`` over steps with an optax optimizer; several
objectives of one structure render at once with ``vmap`` (a whole layer's channels in one call).
Images are optimised NHWC; a model that reads its images channels first is run on them through
its hashable NHWC view (:func:`jaxplain.core._channels.channels_last_view`, or the
``channel_axis=`` the caller names), and the rendered images are handed back in the model's own
layout. Where the layout cannot be read off the model and the evidence says it may not be
channels-last, render warns: a spatial prior would act on the wrong axes. The model reads the
images in ``dtype`` (float32 by default); the parameters stay at least float32.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array

from jaxplain.core import capture, sites
from jaxplain.core._adapters import refuse_module
from jaxplain.core._capture import program_of
from jaxplain.core._channels import (ChannelsLast, channels_last_view, image_channel_axis,
                                     way_back)
from jaxplain.core._cpu import cpu_friendly
from jaxplain.core._function_cache import per_function
from jaxplain.core._layout import fast_convolutions
from jaxplain.visualize._checks import check_objective, check_sites
from jaxplain.visualize._objectives import (Constant, Diversity, Objective, check_leaves,
                                             stack, terms)
from jaxplain.visualize._param import Pixel, check_image_shape
from jaxplain.visualize._regularizers import Blur, TotalVariation
from jaxplain.visualize._transforms import apply_transforms
from jaxplain.core._keys import check_key


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


@per_function(maxsize_fallback=64)
def _output_shape(f: Callable, shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    return jax.eval_shape(f, jax.ShapeDtypeStruct(shape, dtype)).shape


_FLOATS = ("float32", "float64", "bfloat16", "float16")


def _view(f: Callable, shape: tuple[int, ...], dtype: np.dtype, channel_axis: int | None
          ) -> tuple[Callable, int | None]:
    """``(g, axis)``: ``f`` as a function of channels-last batches and the axis of ``shape``
    that holds the channels (None: the last), detected or the caller's ``channel_axis``
    (normalised to a non-negative axis); ``g`` is run once at the channels-last shape."""
    if channel_axis is None:
        g, axis = channels_last_view(f, jax.ShapeDtypeStruct(shape, dtype))
    else:
        axis = None if channel_axis == len(shape) - 1 else channel_axis
        g = f if axis is None else ChannelsLast(f, axis)
    _output_shape(g, _nhwc(shape, axis), dtype)
    return g, axis


def _runs_on(f: Callable, shape: tuple[int, ...], dtype: np.dtype,
             channel_axis: int | None) -> bool:
    try:
        _view(f, shape, dtype, channel_axis)
    except Exception:
        return False
    return True


def _cannot_run(err: Exception, f: Callable, shape: tuple[int, ...], dtype: np.dtype,
                channel_axis: int | None) -> ValueError:
    """The model's own error on a batch of ``shape`` and ``dtype``, as a ValueError that names
    ``dtype`` when ``f`` runs on another float dtype, else ``shape``."""
    others = [jnp.dtype(d) for d in _FLOATS if jnp.dtype(d) != dtype]
    others = [d for d in others if jax.dtypes.canonicalize_dtype(d) == d]  # float64 needs x64
    fits = next((d for d in others if _runs_on(f, shape, d, channel_axis)), None)
    if fits is not None:
        return ValueError(f"f cannot run on a {dtype} batch ({type(err).__name__}: {err}) but "
                          f"runs on {fits} ones; pass dtype=jnp.{fits} (render optimises "
                          "float32 images unless dtype= says otherwise)")
    new = ValueError(f"f cannot run on a batch of shape={shape}, dtype={dtype} "
                     f"({type(err).__name__}: {err}); pass shape= as the batch f takes (and "
                     "dtype= for a model that does not take float32 inputs)")
    new.add_note(f"render runs f on a batch of shape={shape}, given in f's own layout: "
                 "(k, c, h, w) for a channels-first model, (k, h, w, c) otherwise")
    return new


@per_function(maxsize_fallback=64)
def _site_shapes(f: Callable, names: tuple[str, ...], shape: tuple[int, ...], dtype: np.dtype):
    check_sites(names, tuple(s.name for s in sites(f, jax.ShapeDtypeStruct(shape, dtype))))
    g = capture(f, list(names))
    _, acts = jax.eval_shape(g, jax.ShapeDtypeStruct(shape, dtype))
    return {k: v.shape for k, v in acts.items()}


def _channels_last(f: Callable, shape: tuple[int, ...], dtype: np.dtype,
                   channel_axis: int | None):
    """``(g, nhwc, axis)``: for a model that reads the batch ``shape`` (in its own layout) with
    its channels on ``axis`` (1 for NCHW; detected for a 4-d batch, or ``channel_axis``), its
    hashable NHWC view ``g`` and ``shape`` moved to NHWC; otherwise ``(f, shape, None)``. A
    ``shape`` or ``dtype`` that ``f`` cannot run on is a ValueError naming it, with the model's
    own error as its cause."""
    try:
        g, axis = _view(f, shape, dtype, channel_axis)
    except Exception as err:
        raise _cannot_run(err, f, shape, dtype, channel_axis) from err
    return g, _nhwc(shape, axis), axis


def _check_channel_axis(channel_axis: Any, shape: tuple[int, ...]) -> int | None:
    """``channel_axis`` as a non-negative axis of the batch ``shape`` other than the batch
    axis (None stays None: detect it)."""
    if channel_axis is None:
        return None
    n = len(shape)
    if (not isinstance(channel_axis, (int, np.integer)) or isinstance(channel_axis, bool)
            or not -n < channel_axis < n or channel_axis % n == 0):
        raise ValueError(f"channel_axis must name a non-batch axis of the {n}-D batch shape="
                         f"{shape} (1 to {n - 1}, or -1 to -{n - 1}; 1 for NCHW), got "
                         f"{channel_axis!r}")
    return int(channel_axis) % n


def _spatial(param, transforms: tuple, regularizers: tuple) -> bool:
    """Whether the images' layout matters to the render: the Fourier basis, a generator, a
    colour matrix, transforms, or a total-variation or blur penalty act on (h, w) or c."""
    return (bool(transforms) or not isinstance(param, Pixel) or param.colour is not None
            or any(isinstance(r, (TotalVariation, Blur)) for r in regularizers))


def _layout_doubt(f: Callable, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    """Why the NHWC reading of a 4-d batch ``shape`` may be wrong, or None where it is the
    likely one (the first convolution's channels lead back to the last axis, or see below):
    the way back was lost at some op (or reaches several axes) while the last axis is not the
    smallest, or the model gives no evidence (no convolution) while axis 1 is the smallest, as
    in ``(k, 3, h, w)``."""
    spec = jax.ShapeDtypeStruct(shape, dtype)
    if image_channel_axis(f, spec) is not None:
        return None
    back = way_back(program_of(f, spec, warn=False)[0])
    last_smallest = shape[3] < min(shape[1:3])
    if back.lost and not last_smallest:
        return (f"the first convolution's input channels could not be followed back to the "
                f"input: the way back is lost at {', '.join(back.lost)}")
    if len(back.axes) > 1 and not last_smallest:
        return (f"the first convolution's input channels come from several input axes "
                f"{sorted(back.axes)}")
    if not back.lost and shape[1] < shape[3] and shape[1] == min(shape[1:]):
        return ("no convolution's channels lead back to the input, and axis 1 is the "
                "smallest, as the channels of an NCHW batch are")
    return None


def _warn_if_layout_unread(f: Callable, shape: tuple[int, ...], dtype: np.dtype, param,
                           transforms: tuple, regularizers: tuple) -> None:
    """Warn when the 4-d batch ``shape`` is read channels-last against the evidence
    (:func:`_layout_doubt`) while its layout matters (:func:`_spatial`)."""
    if len(shape) != 4 or not _spatial(param, transforms, regularizers):
        return
    doubt = _layout_doubt(f, shape, dtype)
    if doubt is not None:
        warnings.warn(
            f"render reads the batch shape={shape} as channels-last (k, h, w, c), but {doubt}. "
            "The Fourier basis, colour matrix, transforms, total variation and blur act on the "
            "axes as read: for a channels-first model pass channel_axis=1 (channel_axis=-1 "
            "confirms channels-last)", stacklevel=3)


def _nhwc(shape: tuple[int, ...], axis: int | None) -> tuple[int, ...]:
    return shape if axis is None else (*shape[:axis], *shape[axis + 1:], shape[axis])


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        dtype = jnp.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"dtype must be a floating dtype such as jnp.float32, got {dtype!r}"
                        ) from err
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype such as jnp.float32, got {dtype}")
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise ValueError(f"dtype={dtype} needs 64-bit JAX: jax.config.update('jax_enable_x64', "
                         "True), or render inside jax.enable_x64(True)")
    return dtype


def _check_images(param, shape: tuple[int, ...]) -> None:
    """The parameterization must make NHWC images of ``shape`` (a generator's output, too)."""
    made = _cached(_made_shape, param, shape)
    if made != shape:
        raise ValueError(f"param makes images shaped {made}; render optimises NHWC images "
                         f"shaped {shape} (a CodeSpace generator returns (k, h, w, c) images, "
                         "channels last, also for a channels-first model)")


def _seen_shape(f: Callable, transforms: tuple, shape: tuple[int, ...], dtype: np.dtype
                ) -> tuple[int, ...]:
    """The shape of the images ``f`` sees after ``transforms`` (:class:`Pad` enlarges them,
    ``Jitter(crop=True)`` shrinks them); a size ``f`` cannot run on is a ValueError."""
    if not transforms:
        return shape
    seen = _cached(_transformed_shape, transforms, shape, dtype)
    if seen != shape:
        try:
            _output_shape(f, seen, dtype)
        except Exception as err:
            raise ValueError(
                f"the transforms change the NHWC images from {shape} to {seen} (Pad enlarges "
                "them, Jitter(crop=True) shrinks them), but f cannot run on that size "
                f"({type(err).__name__}: {err}); use transforms that keep the size (e.g. "
                "standard_transforms(size)[1:], without its Pad), or a model that takes any "
                "image size (e.g. convolutions and a global pooling)") from err
    return seen


def _cached(shape_of: Callable, *args) -> tuple[int, ...]:
    """``shape_of(*args)``, traced once per hashable ``args`` (every time otherwise)."""
    try:
        hash(args)
    except TypeError:  # e.g. a colour matrix in param
        return shape_of.__wrapped__(*args)
    return shape_of(*args)


@functools.lru_cache(maxsize=64)
def _made_shape(param, shape: tuple[int, ...]) -> tuple[int, ...]:
    return jax.eval_shape(lambda k: param.image(param.init(k, shape), shape),
                          jax.random.key(0)).shape


@functools.lru_cache(maxsize=64)
def _transformed_shape(transforms: tuple, shape: tuple[int, ...], dtype: np.dtype
                       ) -> tuple[int, ...]:
    return jax.eval_shape(lambda k, x: apply_transforms(transforms, k, x), jax.random.key(0),
                          jax.ShapeDtypeStruct(shape, dtype)).shape


def _validate(f, objective: Objective, shape: tuple[int, ...], seen: tuple[int, ...],
              dtype: np.dtype, batched: bool) -> None:
    """Check indices, positions and vectors against the sites at the rendered size ``shape``
    (where ``value`` is taken) and at the size ``seen`` after the transforms (every step)."""
    names = objective.sites()
    if any(isinstance(t, Diversity) for t in terms(objective)) and shape[0] < 2:
        raise ValueError(f"a diversity term needs at least 2 images per objective; shape[0] is "
                         f"{shape[0]} (pass shape=(k, h, w, c) with k >= 2)")
    for size in dict.fromkeys((shape, seen)):
        where = "" if seen == shape else f" (on the {size} images {_WHO[size == seen]})"
        check_objective(objective, logits=_output_shape(f, size, dtype),
                        shapes=_site_shapes(f, tuple(names), size, dtype) if names else {},
                        batched=batched, where=where)


_WHO = {False: "render returns, where value is taken",
        True: "the model sees after the transforms, at every step"}


def _render_one(objective, param, regularizers, key, learning_rate, *, f, shape, dtype, steps,
                transforms, optimizer):
    names = objective.sites()
    g = cpu_friendly(capture(f, list(names)) if names else (lambda x: (f(x), {})))
    # The parameters and the images the regularizers see are at least float32 (a bfloat16
    # model's images are optimised in float32); the model reads them in ``dtype``.
    work = jnp.promote_types(dtype, jnp.float32)

    def image(param, params):
        return param.image(params, shape).astype(work)

    def evaluate(objective, param, regularizers, params, k):
        images = image(param, params)
        seen = apply_transforms(transforms, k, images) if k is not None else images
        seen = seen.astype(dtype)
        y, acts = g(seen)
        value = objective(acts, y, seen).astype(work)
        penalty = sum((jnp.sum(r(images)) for r in regularizers), jnp.zeros((), work))
        return penalty - value, value

    # The loop body's convolution gradients in XLA:CPU's fast layout (see jaxplain.core._layout),
    # after the forward pass's own CPU rewrites (jaxplain.core._cpu).
    gradient = fast_convolutions(jax.value_and_grad(evaluate, argnums=3, has_aux=True))
    k_init, k_steps = jax.random.split(key)
    params = jax.tree_util.tree_map(
        lambda p: p.astype(work) if jnp.issubdtype(p.dtype, jnp.floating) else p,
        param.init(k_init, shape))
    # Adam's step size is traced, so a new learning_rate reuses the compiled loop.
    optimizer = optax.adam(learning_rate) if optimizer is None else optimizer

    # optax mixes Python floats with its int32 step count, which jax_numpy_dtype_promotion=
    # "strict" refuses: the optimizer alone runs under standard promotion.
    def init(params):
        with jax.numpy_dtype_promotion("standard"):
            return optimizer.init(params)

    def step(carry, k):
        params, state = carry
        (_, value), grads = gradient(objective, param, regularizers, params, k)
        with jax.numpy_dtype_promotion("standard"):
            updates, state = optimizer.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        return (params, state), value

    (params, _), trace = jax.lax.scan(step, (params, init(params)),
                                      jax.random.split(k_steps, steps))
    _, value = evaluate(objective, param, regularizers, params, None)
    return Rendering(image(param, params).astype(dtype), params, trace, value)


@functools.partial(jax.jit, static_argnames=("f", "shape", "dtype", "steps", "transforms",
                                             "optimizer", "n"))
def _render(objective, param, regularizers, key, learning_rate, *, f, shape, dtype, steps,
            transforms, optimizer, n):
    """``n``: the number of stacked objectives (None: one objective). Static, because a stack
    of objectives without array fields (``layer``, ``diversity``) has no leaf to read it from."""
    run = functools.partial(_render_one, f=f, shape=shape, dtype=dtype, steps=steps,
                            transforms=transforms, optimizer=optimizer)
    if n is None:
        return run(objective, param, regularizers, key, learning_rate)
    keys = jax.random.split(key, n)
    return jax.vmap(run, in_axes=(0, None, None, 0, None))(objective, param, regularizers, keys,
                                                           learning_rate)


def _describe(objective: Objective) -> str:
    """A short name of an objective's terms, e.g. ``channel('relu', ...)``."""
    parts = []
    for t in terms(objective):
        kind = type(t).__name__.lower()
        if kind == "class":
            kind = "class_probability" if t.probability else "class_logit"
        site = getattr(t, "site", None)
        parts.append(f"{kind}({site!r})" if site is not None else f"{kind}(...)")
    return " + ".join(parts)


@functools.partial(jax.jit, static_argnames="offset")
def _dead(trace, value, offset: bool):
    """``Bool[[n]]``: which objectives were unchanged at every step of ``trace`` (``([n,]
    steps)``), at 0, or at their constant terms alone (``offset``: the objective has some)."""
    return jnp.all(trace == value[..., None], axis=-1) & ((value == 0) | offset)


def _warn_if_dead(out: Rendering, objective: Objective, batched: bool) -> None:
    """Warn when the objective was exactly 0 at every step and at the end (eager calls only)."""
    if isinstance(out.trace, jax.core.Tracer) or isinstance(out.value, jax.core.Tracer):
        return
    offset = any(isinstance(t, Constant) for t in terms(objective))
    # One read of ``n`` bools from the device (one wait on an accelerator), not of the trace.
    dead = jax.device_get(_dead(out.trace, out.value, offset))
    if not np.any(dead):
        return
    which = (f"objectives {np.flatnonzero(dead).tolist()} of {dead.size} "
             if batched else "the objective ")
    warnings.warn(
        f"render: {which}({_describe(objective)}) stayed exactly 0 at every step (apart from "
        "constant terms): no gradient reached the images, which are only the start noise. A "
        "dead unit, e.g. a ReLU unit that the start images never activate. Try another start "
        "(a larger param std such as "
        "Pixel(std=1.0), or another key), or the pre-activation site (the convolution or "
        "dense layer before the ReLU)", RuntimeWarning, stacklevel=3)


def render(f: Callable[[Array], Array], objective: Objective | Sequence[Objective], *,
           key: Array, shape: Sequence[int], steps: int = 256, param: Any = None,
           transforms: Sequence[Callable] = (), regularizers: Sequence[Callable] = (),
           learning_rate: float = 0.05,
           optimizer: optax.GradientTransformation | None = None,
           dtype: Any = jnp.float32, channel_axis: int | None = None) -> Rendering:
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
        key: a JAX PRNG key (``jax.random.key(0)``, not an int seed): the start point and the
            transforms' draws.
        shape: the image batch rendered *per objective*, in ``f``'s own layout: ``(k, h, w, c)``,
            or ``(k, c, h, w)`` for a channels-first model; ``k >= 2`` to use a
            :func:`diversity` term. The parameterization, transforms, regularizers and the
            objective's image argument work on the NHWC images ``(k, h, w, c)`` either way.
        steps: optimization steps.
        param: the parameterization (:class:`Pixel` by default, :class:`Fourier`,
            :class:`CodeSpace`).
        transforms: e.g. ``(Jitter(1), Scale(), Rotate())`` or ``standard_transforms(h)``;
            hashable values. :class:`Pad` and ``Jitter(crop=True)`` change the size of the
            images the model sees at each step, so ``f`` must take that size too (a model with
            a global pooling does); ``value`` is still taken on the returned images.
        regularizers: penalties such as ``(L2(0.01), TotalVariation(0.05), Blur(1.0))`` or a
            :func:`gaussian_prior`.
        learning_rate: Adam's step size when ``optimizer`` is None (traced: a new value
            reuses the compiled loop).
        optimizer: any optax optimizer (a hashable value: create it once and reuse it).
        dtype: the floating dtype of the images ``f`` reads, e.g. ``jnp.float64`` for a model
            whose weights are float64 (with ``jax_enable_x64``) or ``jnp.bfloat16``. The
            parameters, regularizers and ``trace`` stay at least float32; ``images`` come back
            in ``dtype``. A model that cannot run on float32 inputs but runs on another float
            dtype is a ValueError naming ``dtype=``.
        channel_axis: the axis of the batch ``shape`` that holds the channels, batch first as
            :attr:`jaxplain.Site.channel_axis` and :func:`colour_decorrelation` count it (``1``
            for NCHW, ``-1`` for NHWC). ``None`` (default): read off the model (its first
            convolution's input channels followed back to the input), else the last axis. Give
            it where that cannot be read: no convolution (a ViT or MLP-Mixer), or an op before
            the first convolution that the search cannot follow (a colour-mixing ``einsum``).

    Returns:
        A :class:`Rendering` with ``images`` in ``f``'s own layout (shaped ``shape``); with a
        sequence of ``n`` objectives every field gets a leading axis ``n``.

    Warns:
        RuntimeWarning: (eager calls) when an objective is exactly 0 at every step, a dead unit
            whose images are only the start noise.
        UserWarning: when ``channel_axis`` is None, the model's layout cannot be read and the
            evidence says it may not be channels-last (the way back from the first
            convolution is lost at an op, which the message names, or there is no convolution
            and axis 1 is the smallest), while the parameterization, transforms or
            regularizers act on the image axes.

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
    check_key(key)
    batched = not isinstance(objective, Objective)
    n = None
    if batched:
        if isinstance(objective, (str, bytes)) or not isinstance(objective, Sequence):
            raise TypeError("objective must be an Objective or a sequence of Objectives, got "
                            f"{type(objective).__name__}")
        for o in objective:
            if isinstance(o, Objective):
                check_leaves(o)
        n = len(objective)
        objective = stack(objective)
    else:
        check_leaves(objective)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise ValueError(f"shape must be the per-objective input batch, e.g. (k, h, w, c) with "
                         f"positive sizes, got {shape}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    param = Pixel() if param is None else param
    transforms = tuple(transforms)
    if transforms and len(shape) != 4:
        check_image_shape("transforms", shape)
    regularizers = tuple(regularizers)
    for r in (*transforms, *regularizers):
        if not callable(r):
            raise TypeError(f"transforms and regularizers must be callable values, got {r!r}")
    dtype = _check_dtype(dtype)
    channel_axis = _check_channel_axis(channel_axis, shape)
    refuse_module(f)
    g, nhwc, axis = _channels_last(f, shape, dtype, channel_axis)
    if channel_axis is None and axis is None:
        _warn_if_layout_unread(f, shape, dtype, param, transforms, regularizers)
    f, shape = g, nhwc
    _check_images(param, shape)
    _validate(f, objective, shape, _seen_shape(f, transforms, shape, dtype), dtype, batched)
    out = _render(objective, param, regularizers, key, learning_rate, f=f, shape=shape,
                  dtype=dtype, steps=steps, transforms=transforms, optimizer=optimizer, n=n)
    _warn_if_dead(out, objective, batched)
    if axis is None:
        return out
    return dataclasses.replace(out, images=jnp.moveaxis(out.images, -1, axis - len(shape)))
