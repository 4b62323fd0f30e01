"""The pathway gradient: input gradient of the network with the pathway masks in the forward.

With the masks fixed, the masked network ``f^m`` keeps only units that were strictly active at
``x`` in the original network; in the masked forward some may be off at ``x`` itself (and then
carry no gradient). ``f^m`` is affine around ``x`` until a kept unit changes sign in the masked
forward; its gradient (``vjp``) and directional derivatives (``jvp``) describe that affine piece.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from jaxplain import core
from jaxplain.core._capture import OwnEdit
from jaxplain.core._cpu import cpu_friendly
from jaxplain.pathways import _checks, _contributions, _select


def apply(f: Callable, masks: Mapping[str, Bool[ArrayLike, "batch *site"]]) -> Callable:
    """The masked network: ``a <- m * a`` at every site of ``masks``, in the forward pass.

    Args:
      f: model function.
      masks: ``{site: mask}`` shaped like each site's value (from :func:`select`, or any
        pruning method); bool or float (a float mask acts as a gate).

    Returns:
      A pure function ``x -> logits`` for inputs with the masks' batch size (another batch size
      is refused with a ``ValueError``, as :func:`masked_gradient` refuses it); it composes
      with ``jit``, ``grad``, ``jvp`` and ``vmap`` like ``f``.
    """
    _checks.check_function(f)
    masks = _checks.check_masks(masks)
    h = core.intervene(f, {name: OwnEdit(_masked, m) for name, m in masks.items()})

    # the program's marks kept (one holding traced masks is not cached); __wrapped__ is h
    @functools.wraps(h, assigned=(), updated=("__dict__",))
    def masked(x):
        _check_batch(x, masks)  # a mask of one example would broadcast over the batch
        return h(x)

    return masked


def _masked(value, mask):
    """``value * mask``, the mask an argument of the compiled program (see ``OwnEdit``)."""
    return value * mask.astype(value.dtype)


def _one_hot_vjp(h, x, t):
    y, pullback = jax.vjp(h, x)
    return pullback(jax.nn.one_hot(t, y.shape[-1], dtype=y.dtype))[0]


@functools.partial(jax.jit, static_argnames=("f",))
def _masked_gradient(f, x, target, masks):
    return _one_hot_vjp(cpu_friendly(apply(f, masks)), x, _checks.targets(f, x, target))


@functools.partial(jax.jit, static_argnames=("f",))
def _masked_jvp(f, x, target, masks, direction):
    t = _checks.targets(f, x, target)
    y, dy = jax.jvp(cpu_friendly(apply(f, masks)), (x,), (direction,))
    return _contributions._picked(y, t), _contributions._picked(dy, t)


def _check_batch(x, masks):
    """Refuse masks whose batch size is not ``x``'s (shapes only, so traced arrays too)."""
    batch = jnp.shape(x)[:1]
    for name, m in masks.items():
        if jnp.shape(m)[:1] != batch:
            raise ValueError(
                f"masks[{name!r}] has shape {jnp.shape(m)} but x has batch size "
                f"{batch[0] if batch else None} (x of shape {jnp.shape(x)}); masks are per "
                "example and must come from the same batch."
            )


def masked_gradient(
    f: Callable, x: Float[ArrayLike, "batch *features"], target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""] | None,
    masks: Mapping[str, Bool[ArrayLike, "batch *site"]],
) -> Float[Array, "batch *features"]:
    """Input gradient of ``y_target`` of the masked network ``apply(f, masks)`` (one vjp).

    Use it for masks from any source (contribution pathways, learned gates, greedy, random);
    :func:`pathway_gradient` selects the masks and calls this in one compiled function.

    Args:
      f: model function, batch in, logits ``(batch, classes)`` out.
      x: input batch ``(batch, ...)``.
      target: class per example (int or ``(batch,)``); ``None``: the predicted class.
      masks: ``{site: mask}``, each shaped like the site's value for this batch
        ``(batch, ...)``, as :func:`apply` takes them.

    Returns:
      The gradient, shaped like ``x``.
    """
    _checks.check_function(f)
    x = _checks.check_x(x)
    masks = _checks.check_masks(masks)
    _check_batch(x, masks)
    _, n_classes = _checks.resolve(f, x, tuple(masks))
    target = _checks.check_target(target, x.shape[0], n_classes)
    return _masked_gradient(f, x, target, dict(masks))


def masked_jvp(
    f: Callable, x: Float[ArrayLike, "batch *features"], target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""] | None,
    masks: Mapping[str, Bool[ArrayLike, "batch *site"]], direction: Float[ArrayLike, "batch *features"],
) -> tuple[Float[Array, "batch"], Float[Array, "batch"]]:
    """``(y^m_t(x), d y^m_t(x)[direction])`` of the masked network, as ``jax.jvp`` returns them.

    Inside the masked network's linear region, ``y^m_t(x + d) = y^m_t(x) + jvp(d)`` exactly.

    Args:
      f, x, target, masks: as in :func:`masked_gradient`.
      direction: the tangent, shaped like ``x``.

    Returns:
      ``(value, derivative)``, each ``(batch,)``.
    """
    _checks.check_function(f)
    x = _checks.check_x(x)
    masks = _checks.check_masks(masks)
    _check_batch(x, masks)
    if jnp.shape(direction) != jnp.shape(x):
        raise ValueError(f"direction must have x's shape {x.shape}; got {jnp.shape(direction)}.")
    _, n_classes = _checks.resolve(f, x, tuple(masks))
    target = _checks.check_target(target, x.shape[0], n_classes)
    return _masked_jvp(f, x, target, dict(masks), direction)


@functools.partial(jax.jit, static_argnames=("f", "specs", "method", "steps", "batch_size"))
def _pathway_gradient(f, x, target, specs, at, method, steps, batch_size):
    t = _checks.targets(f, x, target)
    masks = _select.pathway_masks(f, x, t, specs, at, method, steps, batch_size)
    return _one_hot_vjp(apply(f, masks), x, t), _select.empty_rows(masks)


def pathway_gradient(
    f: Callable, x: Float[ArrayLike, "batch *features"], target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""] | None,
    *, keep: float, sites=None, method: str = "taylor", steps: int = 10,
    batch_size: int | None = _contributions.DEFAULT_BATCH_SIZE,
) -> Float[Array, "batch *features"]:
    """Pathway gradient: ``d y^m_target / dx`` with the critical-pathway masks in the forward.

    Selects the pathway of each example (:func:`select`: contributions, one global percentile,
    dead units dropped), applies the masks to the site values in the forward pass
    (``a <- m * a``, through ``jaxplain.intervene``) and takes the input gradient of the target
    logit of that masked network with one vjp. Two forward/backward passes in all, batched and
    compiled once per (f, shapes, sites): ``keep`` is passed as a value. The masked forward
    differs from the original (downstream pre-activations and ReLU states are the masked
    network's) — this is not a gradient with a masked backward only. With ``keep=1`` it equals ``jax.grad`` of the logit.

    Args:
      f, x, target, keep, sites, method, steps, batch_size: as in :func:`select`.

    Returns:
      Signed gradient shaped like ``x``. For the paper's one-channel display use
      :func:`max_abs_channel`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxplain import pathways
      >>> f = lambda x: jax.nn.relu(x) @ jnp.array([[1.0, 0.0], [3.0, 1.0]])  # y_0 = a_0 + 3 a_1
      >>> x = jnp.array([[2.0, 1.0]])
      >>> pathways.pathway_gradient(f, x, 0, keep=0.5).tolist()  # only a_1 on the path
      [[0.0, 3.0]]
      >>> pathways.pathway_gradient(f, x, 0, keep=1.0).tolist()  # the plain gradient
      [[1.0, 3.0]]

    References:
      Khakzar et al., "Neural Response Interpretation through the Lens of Critical Pathways",
      CVPR 2021.
    """
    x, target, specs, at, batch_size = _select.select_arguments(
        f, x, target, keep=keep, sites=sites, method=method, steps=steps, batch_size=batch_size)
    grad, empty = _pathway_gradient(f, x, target, specs, at, method, steps, batch_size)
    _select.warn_if_empty(empty, x.shape[0], _checks.check_keep(keep))
    return grad


def pathway_jvp(
    f: Callable, x: Float[ArrayLike, "batch *features"], target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""] | None,
    direction: Float[ArrayLike, "batch *features"], *, keep: float, sites=None,
    method: str = "taylor", steps: int = 10,
    batch_size: int | None = _contributions.DEFAULT_BATCH_SIZE,
) -> tuple[Float[Array, "batch"], Float[Array, "batch"]]:
    """Directional derivative of the masked target logit along ``direction`` (forward mode).

    Equals ``sum(pathway_gradient(...) * direction)`` per example, without materialising the
    gradient; returns ``(y^m_t(x), d y^m_t(x)[direction])``.

    Args:
      f, x, target, keep, sites, method, steps, batch_size: as in :func:`select`.
      direction: the tangent, shaped like ``x``.

    Returns:
      ``(value, derivative)``, each ``(batch,)``.
    """
    _checks.check_function(f)
    x = _checks.check_x(x)
    masks = _select.select(f, x, target, keep=keep, sites=sites, method=method, steps=steps,
                            batch_size=batch_size)
    return masked_jvp(f, x, target, masks, direction)


@functools.partial(jax.jit, static_argnames="axis")
def max_abs_channel(maps: Float[ArrayLike, "batch *spatial C"],
                    axis: int = -1) -> Float[Array, "batch *spatial"]:
    """The paper's one-channel display: per position, the signed channel value of largest |.|.

    Args:
      maps: channels-last maps with any number of spatial axes, ``(batch, T, C)`` signals,
        ``(batch, H, W, C)`` images or ``(batch, D, H, W, C)`` volumes (e.g. a pathway gradient).
      axis: the channel axis (1 for the NCHW maps of a channels-first model's input).

    Returns:
      The maps without their channel axis, ``(batch, H, W)`` for images, signed; divide by
      ``max |.|`` and show ``|.|`` to match the authors' figures.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxplain import pathways
      >>> pathways.max_abs_channel(jnp.array([[[[1.0, -3.0, 2.0]]]])).tolist()
      [[[-3.0]]]
    """
    if jnp.ndim(maps) < 3:
        raise ValueError(f"max_abs_channel takes maps with a batch, spatial and channel axes, "
                         f"(batch, *spatial, C) or (batch, C, *spatial); got shape "
                         f"{jnp.shape(maps)}, which has no channel axis to collapse (a map of "
                         f"(batch, features) is one value per feature already)")
    idx = jnp.expand_dims(jnp.argmax(jnp.abs(maps), axis=axis), axis)
    return jnp.squeeze(jnp.take_along_axis(maps, idx, axis=axis), axis)
