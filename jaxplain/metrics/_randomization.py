"""Sanity checks (Adebayo et al.): do explanations change when the model is randomized?

An explanation that survives randomizing the weights (or training on shuffled labels) cannot be
explaining what the model learned. Each check re-explains the same inputs and targets with the
randomized model and scores the similarity to the original explanation: Spearman rank
correlation of the signed maps and of their absolute values, and SSIM of the maps scaled by
their max ``|.|`` (the protocol of the critical-pathways sanity checks).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxplain.metrics import _checks as checks
from jaxplain.metrics._similarity import spearman, ssim

MODES = ("cascading", "independent")


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=("spearman", "spearman_abs", "ssim"),
    meta_fields=("states",),
)
@dataclasses.dataclass(frozen=True)
class RandomizationResult:
    """Similarity of each randomized state's explanations to the original ones.

    Attributes:
        states: Names of the states: for cascading randomization the top-most layer randomized
            so far (all layers above it are random too), for independent randomization the one
            layer randomized, for label randomization ``("shuffled labels",)``.
        spearman: ``(states, batch)`` Spearman correlation of the signed maps.
        spearman_abs: ``(states, batch)`` Spearman correlation of ``|map|``.
        ssim: ``(states, batch)`` SSIM of the maps divided by their max ``|.|``.
    """

    states: tuple[str, ...]
    spearman: Float[Array, "states batch"]
    spearman_abs: Float[Array, "states batch"]
    ssim: Float[Array, "states batch"]


def _to_map(a: jax.Array) -> jax.Array:
    """NHWC attributions to ``(batch, H, W)`` maps (channels summed), scaled by max ``|.|``."""
    m = a.sum(-1)
    top = jnp.abs(m).max(axis=(1, 2), keepdims=True)
    return m / jnp.where(top > 0, top, 1.0)


@functools.partial(jax.jit, static_argnames=("win_size",))
def _similarities(a0, a, win_size):
    m0, m = _to_map(a0), _to_map(a)
    return (spearman(m0, m), spearman(jnp.abs(m0), jnp.abs(m)),
            ssim(m0, m, data_range=2.0, win_size=win_size))


def _explain(model, variables, x, target, method):
    from jaxplain.core import as_function

    return method(as_function(model, variables), x, target)


def _params(variables: Any) -> dict[str, Any]:
    if not isinstance(variables, dict) and not hasattr(variables, "keys"):
        raise TypeError(f"variables must be a Flax variables dict, got {type(variables).__name__}")
    if "params" not in variables:
        raise ValueError(f"variables must hold a 'params' collection, got keys {list(variables)}")
    return dict(variables["params"])


def _check_inputs(x, method, win_size):
    x = checks.check_batch(x)
    if x.ndim != 4:
        raise ValueError(f"x must be NHWC images (batch, H, W, C), got shape {x.shape}")
    checks.check_method(method)
    checks.check_positive_int(win_size, "win_size", 3)
    if win_size % 2 == 0 or win_size > min(x.shape[1:3]):
        raise ValueError(f"win_size must be odd and at most {min(x.shape[1:3])}, got {win_size}")
    return x


def _layer_order(f, x, params: dict[str, Any]) -> tuple[str, ...]:
    """Top-level parameter entries in the order the model calls them (input to output).

    A restored checkpoint may hold the params sorted by name, so the order comes from the
    model's sites (:func:`jaxplain.sites`, the first path component that names an entry);
    entries the sites do not
    name follow in dict order.
    """
    from jaxplain.core import sites

    seen: list[str] = []
    for site in sites(f, x[:1]):
        head = next((part for part in site.name.split("/") if part in params), None)
        if head is not None and head not in seen:
            seen.append(head)
    return tuple(seen) + tuple(name for name in params if name not in seen)


def _gaussian_like(tree: Any, key: Array, stdev: float) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [stdev * jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)]
    )


def randomization_check(
    model: Any,
    variables: Any,
    x: Float[Array, "batch h w c"],
    method: Callable[..., Array],
    *,
    key: Array,
    target: Int[Array, " batch"] | int | None = None,
    mode: str = "cascading",
    layers: Sequence[str] | None = None,
    stdev: float | None = None,
    win_size: int = 5,
) -> RandomizationResult:
    """Model-parameter randomization: re-explain after re-drawing layers from the top down.

    ``layers`` are the top-level entries of ``variables["params"]`` (module names), ordered as
    the model calls them (from :func:`jaxplain.sites`), input to output. Cascading mode randomizes the last layer,
    then the last two, ... down to all of them; independent mode randomizes one layer at a time
    with the rest intact. Fresh weights come from the model's own initializers
    (``model.init(key, x[:1])``, Adebayo et al.'s re-initialization) or, with ``stdev``, from
    ``N(0, stdev²)`` for weights and biases alike (the critical-pathways code uses 0.1). Other
    collections (e.g. ``batch_stats``) stay as they are.

    Args:
        model: A Flax Linen module (anything :func:`jaxplain.as_function` accepts with
            ``variables``, and with ``init`` when ``stdev`` is ``None``).
        variables: Its variables, with a ``params`` collection.
        x: ``(batch, H, W, C)`` images.
        method: ``method(f, x, target) -> attribution`` shaped like ``x``.
        key: PRNG key for the new weights.
        target: Classes to explain, kept for every state; ``None``: the original prediction.
        mode: ``"cascading"`` or ``"independent"``.
        layers: Layer names, input to output (default: all of ``variables["params"]`` in call
            order).
        stdev: ``None`` for re-initialization, or the standard deviation of Gaussian weights.
        win_size: SSIM window (odd, at most the image size).

    Returns:
        A :class:`RandomizationResult`, one state per layer, top layer first.

    Example:
        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> model = nn.Sequential([lambda x: x.reshape(len(x), -1), nn.Dense(3)])
        >>> x = jnp.ones((2, 5, 5, 1))
        >>> variables = model.init(jax.random.key(0), x)
        >>> edges = lambda f, x, t: x - jnp.roll(x, 1, axis=1)
        >>> r = randomization_check(model, variables, x, edges, key=jax.random.key(1))
        >>> r.states, r.ssim.round(3).tolist()
        (('layers_1',), [[1.0, 1.0]])

    References:
        Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.
    """
    x = _check_inputs(x, method, win_size)
    checks.check_choice(mode, "mode", MODES)
    params = _params(variables)

    from jaxplain.core import as_function

    f0 = as_function(model, variables)
    layers = _layer_order(f0, x, params) if layers is None else tuple(layers)
    unknown = [name for name in layers if name not in params]
    if unknown or not layers:
        raise ValueError(f"layers must be names from variables['params'] {tuple(params)}, got {layers}")
    if stdev is not None and (not isinstance(stdev, (int, float)) or stdev <= 0):
        raise ValueError(f"stdev must be None or a positive number, got {stdev!r}")
    if stdev is None and not hasattr(model, "init"):
        raise TypeError("model has no init(); pass stdev to draw Gaussian weights instead")
    if target is None:
        target = jnp.argmax(f0(x), axis=-1)
    target = checks.check_target(target, x.shape[0], checks.num_classes(f0, x))
    a0 = method(f0, x, target)

    init_key, draw_key = jax.random.split(key)
    fresh = dict(model.init(init_key, x[:1])["params"]) if stdev is None else None
    current = dict(params)
    names, rows = [], []
    for i, name in enumerate(reversed(layers)):
        new = (fresh[name] if fresh is not None
               else _gaussian_like(params[name], jax.random.fold_in(draw_key, i), float(stdev)))
        if mode == "independent":
            current = dict(params)
        current[name] = new
        a = _explain(model, {**variables, "params": current}, x, target, method)
        rows.append(_similarities(a0, a, win_size))
        names.append(name)
    return RandomizationResult(tuple(names), *(jnp.stack(c) for c in zip(*rows)))


def data_randomization_check(
    model: Any,
    variables: Any,
    x: Float[Array, "batch h w c"],
    method: Callable[..., Array],
    *,
    key: Array,
    digits: Any = None,
    target: Int[Array, " batch"] | int | None = None,
    epochs: int = 5,
    win_size: int = 5,
) -> RandomizationResult:
    """Data randomization: retrain on shuffled labels and compare the explanations.

    The model is trained from scratch with :func:`jaxplain.data.train` on ``digits`` whose
    training labels are permuted (so nothing is learnable), and the same inputs and targets
    are explained with it. A method that explains the learned function must give dissimilar
    maps.

    Args:
        model: The Linen module (retrained from scratch; e.g. ``DigitsCNN()``).
        variables: The variables of the model trained on the true labels.
        x: ``(batch, H, W, C)`` images to explain.
        method: ``method(f, x, target) -> attribution``.
        key: PRNG key for the label permutation and the training.
        digits: The data set (default :func:`jaxplain.data.load_digits`).
        target: Classes to explain; ``None``: the original model's prediction.
        epochs: Training epochs on the shuffled labels.
        win_size: SSIM window.

    Returns:
        A :class:`RandomizationResult` with the single state ``"shuffled labels"``.

    References:
        Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.
    """
    from jaxplain import data
    from jaxplain.core import as_function

    x = _check_inputs(x, method, win_size)
    checks.check_positive_int(epochs, "epochs")
    digits = data.load_digits() if digits is None else digits
    f0 = as_function(model, variables)
    if target is None:
        target = jnp.argmax(f0(x), axis=-1)
    target = checks.check_target(target, x.shape[0], checks.num_classes(f0, x))
    perm_key, train_key = jax.random.split(key)
    shuffled = dataclasses.replace(
        digits, y_train=jax.random.permutation(perm_key, digits.y_train)
    )
    random_vars, _ = data.train(train_key, shuffled, model, epochs=epochs, progress=False)
    a0 = method(f0, x, target)
    a = _explain(model, random_vars, x, target, method)
    return RandomizationResult(("shuffled labels",),
                               *(c[None] for c in _similarities(a0, a, win_size)))
