"""Random logit: is the explanation of the target class unlike that of another class?"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.metrics import _checks as checks
from jaxplain.metrics._randomization import _channel_axis, _check_window, _to_map
from jaxplain.metrics._robustness import Method
from jaxplain.metrics._similarity import spearman, ssim
from jaxplain.core._keys import check_key

SIMILARITIES = ("ssim", "spearman")


@functools.partial(jax.jit, static_argnames=("classes",))
def other_classes(key: jax.Array, target: jax.Array, *, classes: int) -> jax.Array:
    """``(batch,)`` a class other than ``target[i]``, uniform over the other ``classes − 1``,
    drawn from ``fold_in(key, i)`` as int32 (with x64 on too: the same classes)."""

    def draw(i):
        return jax.random.randint(jax.random.fold_in(key, i), (), 0, classes - 1, jnp.int32)

    r = jax.vmap(draw)(jnp.arange(target.shape[0]))
    t = target.astype(jnp.int32)
    return (r + (r >= t).astype(jnp.int32)).astype(target.dtype)


@functools.partial(jax.jit, static_argnames=("similarity", "win_size", "channel_axis"))
def _similarity(a, b, *, similarity, win_size, channel_axis):
    ma, mb = _to_map(a, channel_axis), _to_map(b, channel_axis)
    if similarity == "ssim":
        return ssim(ma, mb, data_range=2.0, win_size=win_size)
    return spearman(ma, mb)


def random_logit(
    f: Callable[[Array], Array],
    x: Float[ArrayLike, "batch *shape"],
    target: Int[ArrayLike, " batch"] | Int[ArrayLike, ""],
    method: Method,
    *,
    key: Array,
    similarity: str = "ssim",
    win_size: int = 5,
) -> Float[Array, " batch"]:
    """Random logit: the similarity of the target's explanation to that of a random other class.

    Each example ``i`` is explained for its target and for a class drawn uniformly from the
    others (from ``fold_in(key, i)``: see :func:`other_classes`), with one call of ``method``
    on the batch for each; the score is the similarity of the two maps. Lower is better: a map
    that explains the class barely changes when the class does not match.

    Maps are compared as :func:`randomization_check` compares them: images as their channel
    sums (the channel axis read off the model's first convolution, so NCHW works), divided by
    their max ``|.|``; other inputs flattened.

    Args:
        f: Maps a batch to logits ``(batch, classes)``, at least 2 classes.
        x: ``(batch, *shape)`` inputs.
        target: ``(batch,)`` class indices or one int for all.
        method: ``method(f, x, target) -> attribution`` shaped like ``x``.
        key: PRNG key of the other classes.
        similarity: ``"ssim"`` (images only: :func:`ssim` with ``data_range=2``, Quantus'
            default measure) or ``"spearman"`` (any input: :func:`spearman`).
        win_size: SSIM window, odd, at most the image's side.

    Returns:
        ``(batch,)`` similarities (``1``: the same map for both classes); NaN for an example
        where either map holds NaN or inf (the method's answer to a non-finite output).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda x: x @ jnp.array([[1.0, 1.0, 2.0], [2.0, 2.0, 4.0], [3.0, 3.0, 6.0]])
        >>> grad = lambda f, x, t: jax.grad(lambda x: f(x)[jnp.arange(len(x)), t].sum())(x)
        >>> random_logit(f, jnp.ones((2, 3)), 0, grad, key=jax.random.key(0),
        ...              similarity="spearman").tolist()     # every class has one map
        [1.0, 1.0]

    References:
        Sixt, Granz, Landgraf, "When Explanations Lie: Why Many Modified BP Attributions
        Fail", ICML 2020.
    """
    x, x_check = checks.as_batch(x)
    classes = checks.num_classes(f, x)
    target, target_check = checks.as_target(target, x.shape[0], classes)
    checks.check_method(method)
    check_key(key)
    checks.check_choice(similarity, "similarity", SIMILARITIES)
    if classes < 2:
        raise ValueError(f"random_logit needs a model with at least 2 classes, f returns "
                         f"{classes} output")
    channel_axis = _channel_axis(f, x)
    if similarity == "ssim":
        if channel_axis is None:
            raise ValueError(f'similarity="ssim" compares 2-D maps of images (batch, H, W, C); '
                             f'x has shape {x.shape}: pass similarity="spearman"')
        _check_window(win_size, x, channel_axis)
    other = other_classes(key, target, classes=classes)
    # other's range (true by construction) is read with x and target: the method's own check
    # of its target then finds it known and does not wait for the device again
    checks.run_checks(x_check, target_check, checks.as_target(other, x.shape[0], classes)[1])
    # shapes only: a map holding NaN (a method's answer for a non-finite logit) scores NaN
    a, _ = checks.as_like(method(f, x, target), x, "the attribution of the target")
    b, _ = checks.as_like(method(f, x, other), x, "the attribution of the other class")
    return _similarity(a, b, similarity=similarity, win_size=int(win_size),
                       channel_axis=channel_axis)
