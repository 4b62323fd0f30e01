"""Regularizers and priors: penalties on the rendered images, subtracted from the objective.

Each is a small pytree value with ``__call__(images) -> (batch,)`` penalties (larger = worse);
weights are leaves, so changing a weight reuses the compiled render. The penalties are
L2 (Simonyan et al., 2013), L1 (sparse deviations from a grey centre), total variation
(Mahendran & Vedaldi, 2015), a blur / frequency penalty (the energy the image loses under a
small blur, i.e. its high-frequency energy), and the "expert" of activation maximization:
minus a data log density -- a Gaussian fitted on data (Montavon et al., 2018, AM with an
expert) or any user function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from jaxplain.visualize._param import check_image_shape, frozen_pytree


def _per_image(v: Array) -> Array:
    return jnp.sum(v.reshape(v.shape[0], -1), axis=1)


@frozen_pytree(data=("weight",), meta=("center",))
class L2:
    """``weight * ||x - center||^2`` per image (any input shape)."""

    weight: float = 1.0
    center: float = 0.5

    def __call__(self, images: Array) -> Array:
        return self.weight * _per_image(jnp.square(images - self.center))


@frozen_pytree(data=("weight",), meta=("center",))
class L1:
    """``weight * ||x - center||_1`` per image: the sum of absolute deviations from ``center``.

    Its gradient is ``weight * sign(x - center)``, the same pull however close a pixel is, so
    it favours images that differ from ``center`` in few pixels (sparse), where :class:`L2`
    leaves many small deviations. Works on any input shape (images or flat vectors).

    Example:
        >>> L1(0.5)(jnp.array([[0.0, 1.0, 0.75]]))      # 0.5 * (0.5 + 0.5 + 0.25)
        Array([0.625], dtype=float32)
    """

    weight: float = 1.0
    center: float = 0.5

    def __call__(self, images: Array) -> Array:
        return self.weight * _per_image(jnp.abs(images - self.center))


@frozen_pytree(data=("weight",), meta=("beta",))
class TotalVariation:
    """``weight * sum (dx^2 + dy^2)^(beta/2)`` per image (anisotropic grid differences)."""

    weight: float = 1.0
    beta: float = 1.0

    def __call__(self, images: Array) -> Array:
        check_image_shape("TotalVariation", images.shape)
        dy = images[:, 1:, :-1, :] - images[:, :-1, :-1, :]
        dx = images[:, :-1, 1:, :] - images[:, :-1, :-1, :]
        tv = (dx * dx + dy * dy + 1e-8) ** (self.beta / 2.0)
        return self.weight * _per_image(tv)


def blur(images: Float[ArrayLike, "b h w c"], sigma: float = 0.5) -> Float[Array, "b h w c"]:
    """Separable Gaussian blur (3x3 support, reflect-padded) of an NHWC batch."""
    check_image_shape("blur", images.shape)
    t = jnp.arange(-1.0, 2.0, dtype=images.dtype)
    k = jnp.exp(-0.5 * (t / sigma) ** 2)
    k = k / jnp.sum(k)
    padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    rows = sum(k[i] * padded[:, i : i + images.shape[1], :, :] for i in range(3))
    return sum(k[i] * rows[:, :, i : i + images.shape[2], :] for i in range(3))


@frozen_pytree(data=("weight",), meta=("sigma",))
class Blur:
    """Frequency penalty ``weight * ||x - blur(x)||^2``: the energy a small blur removes."""

    weight: float = 1.0
    sigma: float = 0.5

    def __call__(self, images: Array) -> Array:
        check_image_shape("Blur", images.shape)
        return self.weight * _per_image(jnp.square(images - blur(images, self.sigma)))


@frozen_pytree(data=("mean", "precision_factor", "weight"), meta=("shape",))
class GaussianPrior:
    """Minus the log density (up to a constant) of a Gaussian data model: the "expert".

    ``penalty(x) = weight * 0.5 * ||U^T (x - mean)||^2`` with ``U U^T = Sigma^-1``. Build it with
    :func:`gaussian_prior` from data; ``shape`` is one example's shape there (``()``: unchecked).
    """

    mean: Any
    precision_factor: Any
    weight: float = 1.0
    shape: tuple[int, ...] = ()

    def __call__(self, images: Array) -> Array:
        if self.shape and tuple(images.shape[1:]) != self.shape:
            raise ValueError(
                f"this prior was fitted on examples shaped {self.shape}, the images are shaped "
                f"{tuple(images.shape[1:])}; render's regularizers see NHWC images, so fit it on "
                "NHWC data (jnp.moveaxis(x, 1, -1) for a channels-first model's images)")
        d = images.reshape(images.shape[0], -1) - jnp.asarray(self.mean)[None, :]
        return self.weight * 0.5 * jnp.sum(jnp.square(d @ self.precision_factor), axis=1)


def gaussian_prior(data: Float[ArrayLike, "n *shape"], *, weight: float = 1.0,
                   shrinkage: float = 0.1) -> GaussianPrior:
    """Fit a Gaussian on ``data`` (one example per row) as a data-density prior.

    The covariance is shrunk towards its mean variance, ``(1 - s) S + s tr(S)/d I``, so it is
    invertible with fewer examples than dimensions.

    Args:
        data: examples, batch first, each with the shape of one image as :func:`render`'s
            regularizers see it: NHWC, also for a channels-first model.
        weight: multiplier of the negative log density in the penalty.
        shrinkage: ``s`` in ``[0, 1]``.

    Example:
        >>> prior = gaussian_prior(digits.x_train, weight=0.01)
        >>> render(f, class_logit(3), key=key, shape=(1, 8, 8, 1), regularizers=(prior,))

    References:
        Montavon, Samek, Mueller. Methods for interpreting and understanding deep neural
        networks. Digital Signal Processing, 2018 (activation maximization with an expert).
    """
    data = jnp.asarray(data, jnp.float32)
    if data.ndim < 2 or data.shape[0] < 2:
        raise ValueError(f"data must hold at least 2 examples (batch first), got shape {data.shape}")
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    flat = data.reshape(data.shape[0], -1)
    mean = jnp.mean(flat, axis=0)
    cov = jnp.cov(flat, rowvar=False)
    d = flat.shape[1]
    cov = (1.0 - shrinkage) * cov + shrinkage * jnp.trace(cov) / d * jnp.eye(d, dtype=cov.dtype)
    w, v = jnp.linalg.eigh(cov)
    factor = v / jnp.sqrt(jnp.maximum(w, 1e-6 * jnp.max(w)))[None, :]
    return GaussianPrior(mean, factor, weight, tuple(data.shape[1:]))


@frozen_pytree(data=("weight",), meta=("log_density",))
class LogDensity:
    """A user-provided prior: penalty ``-weight * log_density(images)`` (``(b,)`` values; the
    images are NHWC, also for a channels-first model)."""

    log_density: Callable[[Array], Array]
    weight: float = 1.0

    def __post_init__(self):
        if not callable(self.log_density):
            raise TypeError(f"log_density must be callable, got {type(self.log_density).__name__}")

    def __call__(self, images: Array) -> Array:
        return -self.weight * jnp.broadcast_to(self.log_density(images), images.shape[:1])
