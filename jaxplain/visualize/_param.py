"""Image parameterizations: what the optimizer changes, and how it becomes an image.

A parameterization has ``init(key, shape) -> params`` and ``image(params, shape) -> images`` in
the model's valid input range. Pixels optimize the image directly; the decorrelated Fourier
parameterization optimizes spectrum coefficients scaled by ``1 / f**decay``, which
preconditions gradient ascent towards low frequencies (Olah et al., 2017); colour decorrelation
maps decorrelated channels through the square root of the data's colour covariance; a code-space
parameterization optimizes the input of a generator (Nguyen et al., 2016).

All are frozen dataclasses registered as pytrees: arrays such as the colour matrix and the
floats ``std`` and ``decay`` are leaves, so new values reuse the compiled render. Random starts
are drawn in float32, so one key gives one start whether or not ``jax_enable_x64`` is on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Float

_SQUASH = ("sigmoid", "clip", "none")


_Class = TypeVar("_Class", bound=type)


@dataclass_transform(frozen_default=True)
def frozen_pytree(data: tuple[str, ...], meta: tuple[str, ...]) -> Callable[[_Class], _Class]:
    """A class decorator: a frozen dataclass registered as a pytree with `data` leaves and
    `meta` static fields (a :func:`typing.dataclass_transform`, so that static checkers see
    the dataclass constructor)."""

    def wrap(cls):
        cls = dataclasses.dataclass(frozen=True)(cls)
        return jax.tree_util.register_dataclass(cls, data_fields=list(data), meta_fields=list(meta))

    return wrap


def check_image_shape(what: str, shape: tuple[int, ...]) -> None:
    """Raise ValueError unless ``shape`` is an NHWC image batch (what ``what`` works on)."""
    if len(shape) != 4:
        raise ValueError(
            f"{what}: NHWC images (k, h, w, c) needed, got shape {tuple(shape)}; for flat "
            "(non-image) inputs use Pixel(), the L1 / L2 / prior regularizers and no transforms")


def _check_common(squash: str, value_range: tuple[float, float]) -> None:
    if squash not in _SQUASH:
        raise ValueError(f"squash must be one of {_SQUASH}, got {squash!r}")
    low, high = value_range
    if not low < high:
        raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")


def _to_range(z: Array, squash: str, value_range: tuple[float, float]) -> Array:
    low, high = value_range
    if squash == "sigmoid":
        return low + (high - low) * jax.nn.sigmoid(z)
    centred = z + 0.5 * (low + high)
    if squash == "clip":
        return jnp.clip(centred, low, high)
    return centred


def _colour(z: Array, colour: Array | None) -> Array:
    if colour is None:
        return z
    c = z.shape[-1]
    if jnp.shape(colour) != (c, c):
        raise ValueError(f"colour must be a (c, c) matrix for images with c = {c} channels "
                         f"(see colour_decorrelation), got shape {jnp.shape(colour)}")
    return jnp.einsum("...c,dc->...d", z, jnp.asarray(colour, z.dtype))


def colour_decorrelation(images: Float[ArrayLike, "n h w c"], *, channel_axis: int | None = None
                         ) -> Float[Array, "c c"]:
    """The square root of the channels' covariance in ``images`` (for ``colour=`` below).

    Optimizing in decorrelated colour space and mapping through this matrix gives the colours
    the correlations they have in the data.

    Args:
        images: a 4-D image batch, NHWC by default.
        channel_axis: the axis that holds the channels. ``None`` (default): the last axis,
            which must then hold 1 to 4 channels (grey, RGB, RGBA; this catches channels-first
            data, whose last axis is the image width); ``1`` for NCHW images; any int to take
            that axis as the channels whatever their number.

    Returns:
        The ``(c, c)`` matrix, for the NHWC images :func:`render` optimises.

    Example:
        >>> colour = colour_decorrelation(x_nchw, channel_axis=1)      # (3, 3)
        >>> param = Fourier(colour=colour)
    """
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be a 4-D image batch (NHWC, or pass channel_axis=), got "
                         f"shape {images.shape}")
    if channel_axis is None:
        if images.shape[-1] > 4:
            raise ValueError(
                f"images shaped {images.shape} have {images.shape[-1]} channels on their last "
                "axis; colour_decorrelation reads NHWC images with 1 to 4 channels. For "
                "channels-first (NCHW) images pass channel_axis=1; for images with another "
                "number of channels pass channel_axis=-1")
    else:
        if not -4 <= channel_axis < 4 or channel_axis in (0, -4):
            raise ValueError(f"channel_axis must name a non-batch axis of the 4-D images "
                             f"(1, 2, 3 or -1, -2, -3), got {channel_axis!r}")
        images = jnp.moveaxis(images, channel_axis, -1)
    pix = images.reshape(-1, images.shape[-1])
    cov = jnp.cov(pix, rowvar=False).reshape(images.shape[-1], images.shape[-1])
    w, v = jnp.linalg.eigh(cov)
    sqrt = (v * jnp.sqrt(jnp.clip(w, 0.0))[None, :]) @ v.T
    return sqrt / jnp.max(jnp.linalg.norm(sqrt, axis=0))


@frozen_pytree(data=("colour", "std"), meta=("squash", "value_range"))
class Pixel:
    """Optimize pixel values directly (then colour map and squash to ``value_range``).

    Args:
        std: standard deviation of the random start (in pre-squash units).
        squash: ``"sigmoid"`` (smooth, default), ``"clip"`` or ``"none"``.
        value_range: the valid input range ``(low, high)``.
        colour: optional ``(c, c)`` colour-correlation square root (see
            :func:`colour_decorrelation`); ``None`` leaves channels as they are.
    """

    std: float = 0.01
    squash: str = "sigmoid"
    value_range: tuple[float, float] = (0.0, 1.0)
    colour: Any = None

    def __post_init__(self):
        _check_common(self.squash, self.value_range)

    def init(self, key: Array, shape: tuple[int, ...]) -> Array:
        return self.std * jax.random.normal(key, shape, jnp.float32)

    def image(self, params: Array, shape: tuple[int, ...]) -> Array:
        return _to_range(_colour(params, self.colour), self.squash, self.value_range)


def _frequency_scale(h: int, w: int, decay: float, dtype) -> Array:
    fy = jnp.fft.fftfreq(h, dtype=dtype)[:, None]
    fx = jnp.fft.rfftfreq(w, dtype=dtype)[None, :]
    freq = jnp.sqrt(fy * fy + fx * fx)
    return 1.0 / jnp.maximum(freq, 1.0 / max(h, w)) ** decay


@frozen_pytree(data=("colour", "std", "decay"), meta=("squash", "value_range"))
class Fourier:
    """Optimize the image's 2-D real spectrum, scaled by ``1 / max(f, 1/size) ** decay``.

    The scaling whitens natural-image statistics (power ~ 1/f^2), so a gradient step moves
    all frequencies about equally in "natural" units: the optimum is the same as in pixel space
    but the path avoids high-frequency noise. Adam normalizes each coefficient's step, which
    leaves the update spectrum ~ the scaling itself; where pixel gradients are already smooth
    (tiny images) use a larger ``decay`` or plain gradient ascent (docs/visualize.md).

    Args:
        std: standard deviation of the random spectrum start.
        decay: exponent of the 1/f scaling (1.0: the natural-image spectrum).
        squash, value_range, colour: as :class:`Pixel`.
    """

    std: float = 0.01
    decay: float = 1.0
    squash: str = "sigmoid"
    value_range: tuple[float, float] = (0.0, 1.0)
    colour: Any = None

    def __post_init__(self):
        _check_common(self.squash, self.value_range)

    def init(self, key: Array, shape: tuple[int, ...]) -> Array:
        check_image_shape("Fourier", shape)
        b, h, w, c = shape
        return self.std * jax.random.normal(key, (2, b, c, h, w // 2 + 1), jnp.float32)

    def image(self, params: Array, shape: tuple[int, ...]) -> Array:
        check_image_shape("Fourier", shape)
        h, w = shape[1], shape[2]
        scale = _frequency_scale(h, w, self.decay, params.dtype)
        scale = (scale / jnp.sqrt(jnp.mean(scale**2)))[None, None]
        spectrum = lax.complex(params[0] * scale, params[1] * scale)
        z = jnp.fft.irfft2(spectrum, s=(h, w), norm="ortho")  # (b, c, h, w)
        z = jnp.moveaxis(z, -3, -1)
        return _to_range(_colour(z, self.colour), self.squash, self.value_range)


@frozen_pytree(data=("std",), meta=("generator", "code_shape"))
class CodeSpace:
    """Optimize the input ``z`` of a generator: ``image = generator(z)`` (AM in code space).

    Args:
        generator: a pure function from a batch of codes ``(b, *code_shape)`` to images
            ``(b, h, w, c)`` in the model's input range, channels last also for a
            channels-first model (e.g. a decoder or GAN generator; close over its weights).
        code_shape: shape of one code.
        std: standard deviation of the random start.
    """

    generator: Callable[[Array], Array]
    code_shape: tuple[int, ...]
    std: float = 1.0

    def __post_init__(self):
        if not callable(self.generator):
            raise TypeError(f"generator must be callable, got {type(self.generator).__name__}")

    def init(self, key: Array, shape: tuple[int, ...]) -> Array:
        return self.std * jax.random.normal(key, (shape[0], *self.code_shape), jnp.float32)

    def image(self, params: Array, shape: tuple[int, ...]) -> Array:
        return self.generator(params)
