"""Transformation robustness: random jitter, scale and rotation applied before each step.

A visualization that still excites its target under small random transformations has less
high-frequency adversarial structure (Mordvintsev et al., 2015; Olah et al., 2017). Each
transform is a frozen, hashable value with ``__call__(key, images) -> images`` that draws its
own parameters per image from ``key`` and keeps the shape, so the render loop stays one
``lax.scan`` with one explicit key per step.
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
    centre = jnp.array([(h - 1) / 2.0, (w - 1) / 2.0])
    grid = jnp.stack(jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij"), 0).astype(
        image.dtype)
    src = centre[:, None, None] + jnp.einsum("ij,jhw->ihw", matrix, grid - centre[:, None, None])
    sample = lambda ch: map_coordinates(ch, [src[0], src[1]], order=1, mode="nearest")
    return jax.vmap(sample, in_axes=2, out_axes=2)(image)


@dataclasses.dataclass(frozen=True)
class Jitter:
    """Shift each image by a random integer offset in ``[-pixels, pixels]`` (reflect padding)."""

    pixels: int = 1

    def __post_init__(self):
        if not isinstance(self.pixels, int) or self.pixels < 0:
            raise ValueError(f"pixels must be a non-negative int, got {self.pixels!r}")

    def __call__(self, key: Array, images: Array) -> Array:
        p = self.pixels
        check_image_shape("Jitter", images.shape)
        if p == 0:
            return images
        b, h, w, c = images.shape
        padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
        # One-hot blends of the 2p+1 static crops along y, then along x: no gather, so it
        # batches (vmap over objectives) as cheaply as it runs on one image.
        ky, kx = jax.random.split(key)
        n = 2 * p + 1
        oy = jax.nn.one_hot(jax.random.randint(ky, (b,), 0, n), n, dtype=images.dtype)
        ox = jax.nn.one_hot(jax.random.randint(kx, (b,), 0, n), n, dtype=images.dtype)
        rows = jnp.einsum("kbhwc,bk->bhwc",
                          jnp.stack([padded[:, i:i + h] for i in range(n)]), oy)
        return jnp.einsum("kbhwc,bk->bhwc",
                          jnp.stack([rows[:, :, j:j + w] for j in range(n)]), ox)


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
        s = jax.random.choice(key, jnp.asarray(self.factors, images.dtype), (images.shape[0],))
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
        a = jax.random.choice(key, rad, (images.shape[0],))

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
