"""Transformation robustness: random jitter, scale and rotation, and padding, applied before
each step.

A visualization that still excites its target under small random transformations has less
high-frequency adversarial structure (Mordvintsev et al., 2015; Olah et al., 2017). Each
transform is a frozen, hashable value with ``__call__(key, images) -> images`` that draws its
own parameters per image from ``key``, so the render loop stays one ``lax.scan`` with one
explicit key per step. Most keep the shape; :class:`Pad` enlarges the images the model sees
and ``Jitter(crop=True)`` shrinks them, each by a fixed number of pixels, so every shape in
the loop is still static. :func:`standard_transforms` is Lucid's / Lucent's preset scaled to
the image size.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates
from jaxtyping import Array, Float

from jaxplain.visualize._param import check_image_shape


def _affine(image: Float[Array, "h w c"], matrix: Array) -> Float[Array, "h w c"]:
    """Resample ``image`` so output pixel p shows input pixel ``c + matrix @ (p - c)`` (bilinear)."""
    h, w, _ = image.shape
    centre = jnp.array([(h - 1) / 2.0, (w - 1) / 2.0], image.dtype)
    grid = jnp.stack(jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij"), 0).astype(
        image.dtype)
    src = centre[:, None, None] + jnp.einsum("ij,jhw->ihw", matrix, grid - centre[:, None, None])
    sample = lambda ch: map_coordinates(ch, [src[0], src[1]], order=1, mode="nearest")
    return jax.vmap(sample, in_axes=2, out_axes=2)(image)


def _pixels(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")


def _index(key: Array, b: int, n: int) -> Array:
    """``(b,)`` int32 indices uniform in ``[0, n)``: drawn as int32 whatever
    ``jax_enable_x64`` says, so one key gives one draw (``jax.random.choice`` draws int64
    under x64)."""
    return jax.random.randint(key, (b,), 0, n, jnp.int32)


def _offset_crops(key: Array, source: Array, n: int, h: int, w: int) -> Array:
    """Crop each image of ``source`` to ``(h, w)`` at its own random offset in ``[0, n)²``."""
    # One-hot blends of the n static crops along y, then along x: no gather, so it batches
    # (vmap over objectives) as cheaply as it runs on one image.
    b = source.shape[0]
    ky, kx = jax.random.split(key)
    oy = jax.nn.one_hot(_index(ky, b, n), n, dtype=source.dtype)
    ox = jax.nn.one_hot(_index(kx, b, n), n, dtype=source.dtype)
    rows = jnp.einsum("kbhwc,bk->bhwc", jnp.stack([source[:, i:i + h] for i in range(n)]), oy)
    return jnp.einsum("kbhwc,bk->bhwc", jnp.stack([rows[:, :, j:j + w] for j in range(n)]), ox)


@dataclasses.dataclass(frozen=True)
class Jitter:
    """Shift each image by a random integer offset in ``[-pixels, pixels]`` (reflect padding,
    the size kept), or with ``crop=True`` crop it to ``(h - pixels, w - pixels)`` at a random
    offset in ``[0, pixels]`` (Lucid's ``jitter``: the model then sees smaller images)."""

    pixels: int = 1
    crop: bool = False

    def __post_init__(self):
        _pixels("pixels", self.pixels)
        if not isinstance(self.crop, bool):
            raise ValueError(f"crop must be a bool, got {self.crop!r}")

    def __call__(self, key: Array, images: Array) -> Array:
        p = self.pixels
        check_image_shape("Jitter", images.shape)
        if p == 0:
            return images
        _, h, w, _ = images.shape
        if self.crop:
            if p >= min(h, w):
                raise ValueError(f"Jitter(crop=True) crops {p} pixels off images of {h}x{w}, "
                                 "leaving none: use fewer pixels (or pad first, Pad)")
            return _offset_crops(key, images, p + 1, h - p, w - p)
        padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
        return _offset_crops(key, padded, 2 * p + 1, h, w)


_PAD_MODES = ("constant", "reflect")


@dataclasses.dataclass(frozen=True)
class Pad:
    """Pad each image by ``pixels`` on every side, as ``np.pad``: ``mode="reflect"`` (default,
    as Lucent's ``pad``) or ``"constant"`` with ``value`` (default 0.5, mid-grey in the default
    ``[0, 1]`` range). The model sees ``(h + 2 pixels, w + 2 pixels)`` images."""

    pixels: int
    mode: str = "reflect"
    value: float | None = None

    def __post_init__(self):
        _pixels("pixels", self.pixels)
        if self.mode not in _PAD_MODES:
            raise ValueError(f"mode must be one of {_PAD_MODES}, got {self.mode!r}")
        if self.mode == "reflect":
            if self.value is not None:
                raise ValueError(f"value={self.value!r} is the fill of mode='constant'; "
                                 "mode='reflect' fills with the image's own pixels: pass "
                                 "mode='constant' or drop value")
            return
        value = 0.5 if self.value is None else self.value
        try:
            value = float(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"value must be a number, got {self.value!r}") from err
        object.__setattr__(self, "value", value)

    def __call__(self, key: Array, images: Array) -> Array:
        check_image_shape("Pad", images.shape)
        p = self.pixels
        width = ((0, 0), (p, p), (p, p), (0, 0))
        if self.mode == "reflect":
            return jnp.pad(images, width, mode="reflect")
        return jnp.pad(images, width, mode="constant", constant_values=self.value)


def _floats(name: str, values) -> tuple[float, ...]:
    """``values`` (a tuple, a list as Lucent takes, or a 1-D array) as a hashable tuple."""
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a sequence of numbers such as (0.9, 1.0, 1.1), got "
                         f"{values!r}") from err


@dataclasses.dataclass(frozen=True)
class Scale:
    """Zoom each image about its centre by a factor drawn uniformly from ``factors`` (any
    sequence of numbers, stored as a tuple)."""

    factors: tuple[float, ...] = (0.9, 0.95, 1.0, 1.05, 1.1)

    def __post_init__(self):
        object.__setattr__(self, "factors", _floats("factors", self.factors))
        if not self.factors or any(f <= 0 for f in self.factors):
            raise ValueError(f"factors must be a non-empty tuple of positive floats, got "
                             f"{self.factors!r}")

    def __call__(self, key: Array, images: Array) -> Array:
        check_image_shape("Scale", images.shape)
        s = jnp.asarray(self.factors, images.dtype)[_index(key, images.shape[0], len(self.factors))]
        return jax.vmap(lambda im, f: _affine(im, jnp.eye(2, dtype=im.dtype) / f))(images, s)


@dataclasses.dataclass(frozen=True)
class Rotate:
    """Rotate each image about its centre by an angle drawn uniformly from ``degrees`` (any
    sequence of numbers, stored as a tuple). A positive angle turns the image clockwise as
    displayed (row 0 at the top), the opposite of Lucent's (kornia's) rotation."""

    degrees: tuple[float, ...] = (-5.0, -2.5, 0.0, 2.5, 5.0)

    def __post_init__(self):
        object.__setattr__(self, "degrees", _floats("degrees", self.degrees))
        if not self.degrees:
            raise ValueError(f"degrees must be a non-empty tuple, got {self.degrees!r}")

    def __call__(self, key: Array, images: Array) -> Array:
        check_image_shape("Rotate", images.shape)
        rad = jnp.asarray([math.radians(d) for d in self.degrees], images.dtype)
        a = rad[_index(key, images.shape[0], len(rad))]

        def rotate(im, t):
            m = jnp.array([[jnp.cos(t), -jnp.sin(t)], [jnp.sin(t), jnp.cos(t)]])
            return _affine(im, m)

        return jax.vmap(rotate)(images, a)


def apply_transforms(transforms, key: Array, images: Array) -> Array:
    """Apply ``transforms`` in order, each with its own key split from ``key``."""
    if not transforms:
        return images
    for t, k in zip(transforms, jax.random.split(key, len(transforms))):
        images = t(k, images)
    return images


def standard_transforms(size: int) -> tuple:
    """Lucid's / Lucent's ``standard_transforms``, made for 224-pixel images, scaled to images
    of ``size`` pixels (the smaller side).

    At 224 pixels: ``Pad(12, "constant", 0.5)``, ``Jitter(4)``, ``Scale`` by ``1 + (i - 5) / 50``
    for ``i`` in ``0 .. 10``, ``Rotate`` by ``-10 .. 10`` degrees plus five more 0s, ``Jitter(2)``.
    Pixel amounts scale with ``size / 224``, rounded, at least 1; factors and angles are kept.
    Lucent's ``jitter(d)`` shifts by one of ``d`` offsets, ours by one of ``2 j + 1``, so its
    ``jitter(8)`` and ``jitter(4)`` are our ``Jitter(4)`` and ``Jitter(2)``. The model sees
    images enlarged by ``2 * pad`` pixels (our ``Scale`` keeps the size; Lucent's resizes).

    Example:
        >>> standard_transforms(32)
        (Pad(pixels=2, mode='constant', value=0.5), Jitter(pixels=1, crop=False), ...)
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be the image side in pixels (a positive int), got {size!r}")

    def px(n: int) -> int:
        return max(1, int(n * size / 224 + 0.5))

    return (Pad(px(12), mode="constant", value=0.5), Jitter(px(4)),
            Scale(tuple(1 + (i - 5) / 50 for i in range(11))),
            Rotate(tuple(range(-10, 11)) + 5 * (0,)), Jitter(px(2)))
