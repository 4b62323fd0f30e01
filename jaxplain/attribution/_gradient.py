"""The gradient family: sensitivity (saliency) and gradient x input."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.attribution import _common, _model_checks


@functools.partial(jax.jit, static_argnames=("f", "squared", "times_input"))
def _gradient(f, x, target, *, squared, times_input):
    g = _common.target_gradient(f, x, target)
    if squared:
        g = g * g
    return g * x if times_input else g


def gradient(f: Callable, x: Float[ArrayLike, "batch *feature"],
             target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *,
             squared: bool = False) -> Float[Array, "batch *feature"]:
    """The gradient of the target logit with respect to the input (sensitivity, saliency).

    ``attr[i] = d f(x)[i, target[i]] / d x[i]``, signed (Captum's ``Saliency(abs=False)``).

    Args:
      f: the model, mapping a batch ``(n, *feature)`` to logits ``(n, classes)``.
      x: the inputs, batch first (images NHWC).
      target: the class to explain per example, shape ``(n,)``, or one int for all.
      squared: return the squared gradient, the sensitivity analysis of Simonyan et al. and
        Montavon et al. (``(df/dx)^2``), instead of the signed gradient.

    Returns:
      An array shaped like `x`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxplain.attribution import gradient
      >>> f = lambda x: x @ jnp.array([[1.0, 2.0], [3.0, -1.0]])
      >>> gradient(f, jnp.ones((1, 2)), 1)
      Array([[ 2., -1.]], dtype=float32)

    References:
      Simonyan, Vedaldi, Zisserman. Deep Inside Convolutional Networks: Visualising Image
      Classification Models and Saliency Maps. ICLR workshop 2014.
    """
    x, t = _common.check_arguments(f, x, target)
    _model_checks.warn_if_steps(f, x, "gradient")
    return _gradient(f, x, t, squared=bool(squared), times_input=False)


def gradient_x_input(f: Callable, x: Float[ArrayLike, "batch *feature"],
                     target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""]
                     ) -> Float[Array, "batch *feature"]:
    """Gradient times input (the simple Taylor decomposition): ``x * df(x)_t/dx``.

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``.
      x: the inputs, batch first.
      target: the class to explain per example, shape ``(n,)``, or one int.

    Returns:
      An array shaped like `x`. For a bias-free linear model it sums to the target logit.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxplain.attribution import gradient_x_input
      >>> f = lambda x: x @ jnp.array([[1.0], [3.0]])
      >>> gradient_x_input(f, jnp.array([[2.0, 1.0]]), 0)
      Array([[2., 3.]], dtype=float32)

    References:
      Shrikumar, Greenside, Shcherbina, Kundaje. Not Just a Black Box: Learning Important
      Features Through Propagating Activation Differences. arXiv:1605.01713, 2016.
    """
    x, t = _common.check_arguments(f, x, target)
    _model_checks.warn_if_steps(f, x, "gradient_x_input")
    return _gradient(f, x, t, squared=False, times_input=True)
