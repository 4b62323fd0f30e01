"""Sanity checks (Adebayo et al.): do explanations change when the model is randomized?

An explanation that survives randomizing the weights (or training on shuffled labels) cannot be
explaining what the model learned. Each check re-explains the same inputs and targets with the
randomized model and scores the similarity to the original explanation: Spearman rank
correlation of the signed maps and of their absolute values, and, for images, SSIM of the maps
scaled by their max ``|.|`` (the protocol of the critical-pathways sanity checks). Inputs of any
other shape (vectors, sequences) are compared by Spearman on the flattened attributions only.

The weights and their layers come from :mod:`jaxplain.metrics._weights`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import warnings
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.attribution._common import evaluation_error
from jaxplain.core._caches import register
from jaxplain.core._keys import check_key
from jaxplain.core._user_line import user_stacklevel
from jaxplain.metrics import _checks as checks
from jaxplain.metrics import _perturb as P
from jaxplain.metrics import _rebuilt as rebuilt
from jaxplain.metrics._similarity import spearman, ssim
from jaxplain.metrics._weights import (KINDS, flax_params, fresh_leaves, layer_leaves,
                                       layer_order, model_kind, model_weights)

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
        ssim: ``(states, batch)`` SSIM of the maps divided by their max ``|.|``; ``None`` when
            the inputs are not images (``x`` not 4-D, or a 4-D channel-less volume that a
            convolution reads through ``x[..., None]``): SSIM compares 2-D maps, and a vector, a
            sequence or a volume has none.
    """

    states: tuple[str, ...]
    spearman: Float[Array, "states batch"]
    spearman_abs: Float[Array, "states batch"]
    ssim: Float[Array, "states batch"] | None


def _to_map(a: jax.Array, channel_axis: int | None) -> jax.Array:
    """Image attributions to ``(batch, H, W)`` maps (channels summed), scaled by max ``|.|``;
    other attributions (``channel_axis=None``) flattened to ``(batch, features)``."""
    if channel_axis is None:
        return a.reshape(a.shape[0], -1)
    m = a.sum(channel_axis)
    top = jnp.abs(m).max(axis=(1, 2), keepdims=True)
    return m / jnp.where(top > 0, top, 1.0)


@functools.partial(jax.jit, static_argnames=("win_size", "channel_axis"))
def _similarities(a0, a, win_size, channel_axis):
    m0, m = _to_map(a0, channel_axis), _to_map(a, channel_axis)
    image = None if channel_axis is None else ssim(m0, m, data_range=2.0, win_size=win_size)
    return spearman(m0, m), spearman(jnp.abs(m0), jnp.abs(m)), image


def _check_inputs(x, method, key):
    """`x` checked, but for its values (the NaN check returned, to run with the target's)."""
    x, x_check = checks.as_batch(x)
    checks.check_method(method)
    check_key(key)
    return x, x_check


def _check_target(target, predict: Callable[[], jax.Array], classes: int, x, x_check):
    """`target` as int32 ``(batch,)``, ``predict()`` where None, checked against the model's
    `classes` and with `x`'s values in one read-back."""
    if target is None:
        target = predict()
    target, target_check = checks.as_target(target, x.shape[0], classes)
    checks.run_checks(x_check, target_check)
    return target


def _predict(model, variables, apply_kwargs, weights, x) -> jax.Array:
    """The original model's class for each example, by a compiled program (eagerly for a model
    that JAX cannot trace with its weights as arguments)."""
    try:
        return rebuilt.predict(model, variables, apply_kwargs, weights.leaves, x)
    except (jax.errors.JAXTypeError, rebuilt.Uncached):
        return jnp.argmax(weights.rebuild(list(weights.leaves))(x), axis=-1)


@dataclasses.dataclass(frozen=True)
class _Analysis:
    """What a check reads off the model's structure, by tracing it: its number of classes, the
    channel axis of ``x`` (:func:`_channel_axis`), the default layers in call order (``None``
    where ``layers=`` are given) and the warnings given while finding them."""

    classes: int
    axis: int | None
    order: tuple[str, ...] | None
    warned: tuple[warnings.WarningMessage, ...]


# structural key -> _Analysis, the most recently used last (see _analysis)
_ANALYSES: collections.OrderedDict = register(collections.OrderedDict())
_MAX_ANALYSES = 64


def _analysis(model, variables, apply_kwargs, weights, x, chosen, default: bool) -> _Analysis:
    """The :class:`_Analysis` of the model (its layers `chosen`, in call order where `default`),
    checking that it runs on `x` (:func:`_callable`). It depends on the model's structure and
    `x`'s shape, not on the values of the weights, so it is traced once per structure
    (:func:`jaxplain.metrics._rebuilt.structure`) and shape, as the explaining is compiled
    once: a new function of the weights each call would miss every per-function cache. Its
    warnings are given again on every call. A model whose code has no key (its structure is
    ``None``) is traced on every call."""
    structure = rebuilt.structure(model, variables, apply_kwargs, weights.leaves, x)
    key = (structure, default)
    found = _ANALYSES.pop(key, None) if structure is not None else None
    if found is None:
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                f = weights.rebuild(list(weights.leaves))
                _callable(f, x, model, apply_kwargs)
                axis = _channel_axis(f, x)
                order = layer_order(weights, x, chosen) if default else None
                classes = checks.num_classes(f, x)
        except Exception:
            _give(caught)  # those that came before the failure
            raise
        found = _Analysis(classes, axis, order, tuple(caught))
    if structure is not None:
        _ANALYSES[key] = found
        if len(_ANALYSES) > _MAX_ANALYSES:
            _ANALYSES.popitem(last=False)
    _give(found.warned)
    return found


def _give(warned: Sequence[warnings.WarningMessage]) -> None:
    """Give the recorded warnings `warned` again, at the user's line."""
    for w in warned:
        warnings.warn(w.message, w.category, stacklevel=user_stacklevel())


def _check_apply_kwargs(apply_kwargs: Any) -> dict[str, Any]:
    if apply_kwargs is None:
        return {}
    if not isinstance(apply_kwargs, Mapping) or not all(isinstance(k, str) for k in apply_kwargs):
        raise TypeError("apply_kwargs must be a dict of keyword arguments for the model's call, "
                        f"as jaxplain.as_function takes them (e.g. {{'train': False}}), got "
                        f"{apply_kwargs!r}")
    return dict(apply_kwargs)


def _callable(f, x, model: Any = None, apply_kwargs: Mapping[str, Any] | None = None) -> None:
    """Traces ``f(x)`` once (no FLOPs), adding the fix to a missing-argument error, to the
    error of an Equinox `model` that takes the batch itself but was mapped over the examples,
    and to an `x` without its batch axis
    (:func:`jaxplain.attribution._common.evaluation_error`)."""
    batch = jax.ShapeDtypeStruct(x.shape, x.dtype)
    try:
        jax.eval_shape(f, batch)
    except Exception as e:  # noqa: BLE001 - re-raised, with a hint where one fits
        if isinstance(e, TypeError) and "argument" in str(e):
            raise TypeError(f"the model cannot be called as model(x): {e}. Pass the call's other "
                            "arguments with apply_kwargs=, e.g. apply_kwargs={'train': False}"
                            ) from e
        _takes_the_batch(e, batch, model, apply_kwargs)
        raise evaluation_error(f, x.shape, x.dtype, e) from e


def _takes_the_batch(error: Exception, batch, model: Any, apply_kwargs) -> None:
    """A ``ValueError`` pointing at ``per_example=False`` when the Equinox `model`, mapped over
    the examples by default, failed with `error` but runs on the whole `batch` as it is."""
    from jaxplain.core import as_function

    apply_kwargs = dict(apply_kwargs or {})
    if model is None or model_kind(model) != "equinox" or "per_example" in apply_kwargs:
        return
    try:
        jax.eval_shape(as_function(model, per_example=False, **apply_kwargs), batch)
    except Exception:  # noqa: BLE001 - it fails on the batch too: the original error stands
        return
    first = str(error).splitlines()[0][:200]
    raise ValueError(
        f"the Equinox model fails on one example ({type(error).__name__}: {first}) but runs on "
        "the whole batch: its __call__ takes a batch itself (e.g. it calls jax.vmap), while "
        "the check maps it over the examples by default. Pass "
        "apply_kwargs={'per_example': False}, as jaxplain.as_function(model, "
        "per_example=False) takes it.") from error


def _channel_axis(f, x) -> int | None:
    """For images (4-d ``x`` with a channel axis, see
    :func:`jaxplain.metrics._perturb.layout`), the axis that holds the channels (1 for NCHW);
    ``None`` for other inputs (a channel-less volume ``(n, D, H, W)`` too), whose maps are the
    attributions themselves."""
    if x.ndim != 4:
        return None
    return P.layout(f, x).axis


def _check_window(win_size, x, channel_axis):
    checks.check_positive_int(win_size, "win_size", 3)
    if channel_axis is None:  # no SSIM
        return
    side = min(x.shape[d] for d in (1, 2, 3) if d != channel_axis)
    if win_size % 2 == 0 or win_size > side:
        raise ValueError(f"win_size must be odd and at most {side}, got {win_size}")


def _finite_check(model: Callable[[], Callable], x, a, where: str,
                  layer: str | None = None) -> checks.Check:
    """The check that a randomized state's map `a` is finite, whose error names the
    randomized layer and says whether the state's outputs are finite (``model()`` is its
    function, built only then)."""
    def error(_):
        logits = "finite" if bool(jnp.isfinite(model()(x)).all()) else "not finite either"
        advice = ("" if layer is None else
                  f" If layer {layer!r} holds scales or statistics that must stay positive, "
                  "leave it out with layers=, or take new weights from fresh= (or a smaller "
                  "stdev=).")
        return ValueError(f"the attribution of method is not finite (NaN or inf) with {where}; "
                          f"the model's outputs are {logits}: similarities of such maps mean "
                          "nothing." + advice)
    return checks.Check("finite", a, error)


def randomization_check(
    model: Any,
    variables: Any,
    x: Float[ArrayLike, "batch *feature"],
    method: Callable[..., Array],
    *,
    key: Array,
    target: Int[ArrayLike, " batch"] | Int[ArrayLike, ""] | None = None,
    mode: str = "cascading",
    layers: Sequence[str] | None = None,
    stdev: float | None = None,
    fresh: Any = None,
    win_size: int = 5,
    apply_kwargs: Mapping[str, Any] | None = None,
) -> RandomizationResult:
    """Model-parameter randomization: re-explain after re-drawing layers from the top down.

    The same call serves every model kind. A *layer* is a path below the model's root: by
    default the top-level entries that hold weights (floating-point arrays), with lists of
    layers split into their items, ordered where the model first uses their weights, input
    to output (read from one abstract trace: a bare parameter such as a positional embedding
    sits beside the layer whose output it meets; a layer the model never uses comes last, with
    a warning). A root with a single such entry that holds layers of its own (a wrapper, e.g.
    an Equinox module holding ``model`` and its ``eqx.nn.State``) is looked through: its
    layers are that entry's children (``model/conv1``, ``model/head``), recursively.

    - Flax Linen (``variables`` given): the top-level entries of ``variables["params"]``
      (module names such as ``conv1``); other collections (``batch_stats``) stay as they are.
    - Equinox (``variables=None``): the module's top-level fields, e.g. ``conv1``, or
      ``layers/0``, ``layers/1`` for a list or tuple field (``eqx.nn.Sequential``,
      ``eqx.nn.MLP``). Every floating-point array below a layer is re-drawn, except inside an
      ``eqx.nn.State`` (BatchNorm's running statistics), which is never re-drawn; static
      fields and functions are kept.
    - Flax NNX (``variables=None``): the same, over the module's ``nnx.Param`` state
      (``nnx.split``/``nnx.merge``); batch statistics and RNG state stay as they are.

    ``layers`` may also name deeper paths (``block1/conv_a``, ``conv1/weight``) to randomize
    part of a layer. Given names are taken in the order given, which must be input to output:
    the cascade re-draws the last name first (they are not re-sorted: a user may want another
    order on purpose). Cascading mode randomizes the last layer, then the last two, ... down to
    all of them; independent mode randomizes one layer at a time with the rest intact.

    New weights come from ``fresh``, the same architecture with other weights (Adebayo et al.'s
    re-initialization): for Linen new variables, default ``model.init(key, x[:1],
    **apply_kwargs)``; for Equinox and NNX, which have no ``init``, the module built again with
    another key, e.g. ``fresh=CNN(key=jax.random.key(1))``. With ``stdev`` they are drawn from
    ``N(0, stdev²)`` instead, for weights and biases alike (the critical-pathways code uses
    0.1), layer by layer in the order of the states. A randomized model whose explanation is not
    finite raises a ``ValueError`` naming the layer (never a NaN score).

    For images (4-D ``x``) the maps compared are the attributions with their channels summed.
    The channel axis of ``x`` is read off the model's first convolution, so an Equinox CNN's
    NCHW images are summed over axis 1 (as the faithfulness metrics do); without a convolution
    it is the last axis. A 4-D batch that the first convolution reads with no channel axis (a
    volume ``(batch, D, H, W)`` read as ``x[..., None]``) is no image, and neither is any other
    batch-first input (vectors, sequences): they are compared by Spearman on the flattened
    attributions, and ``ssim`` is ``None``.

    Args:
        model: A Flax Linen module (with ``variables``), a Flax NNX module or an Equinox
            module.
        variables: The Linen variables, with a ``params`` collection; ``None`` for NNX and
            Equinox modules.
        x: A batch: ``(batch, H, W, C)`` images, ``(batch, C, H, W)`` for a channels-first
            model, or any other ``(batch, ...)`` input.
        method: ``method(f, x, target) -> attribution`` shaped like ``x``. Traced once, as
            ``jax.jit`` traces a function, into one program that every state runs with its
            weights as arguments (and a ``functools.partial``'s PRNG keys), so a second call
            with the same model structure, method and shapes compiles nothing. A method JAX
            cannot trace (NumPy) is called as it is, on each state's model.
        key: PRNG key for the new weights.
        target: Classes to explain, kept for every state; ``None``: the original prediction.
        mode: ``"cascading"`` or ``"independent"``.
        layers: Layer names (paths joined by ``/``), in the order given, which must be input to
            output (default: the layers found as above, in call order).
        stdev: ``None`` for the weights of ``fresh``, or the standard deviation of Gaussian
            weights.
        fresh: The source of new weights when ``stdev`` is ``None``: Linen variables of the
            same model, or a module of the same kind and architecture as ``model``.
        win_size: SSIM window (odd, at most the image size; unused for inputs that are not
            images).
        apply_kwargs: Keyword arguments of the model's call, as
            :func:`jaxplain.as_function` takes them (``{"train": False}`` for a Linen model
            whose ``train`` flag has no default; ``{"per_example": False}`` for an Equinox
            module whose ``__call__`` takes the batch itself, which is otherwise mapped over
            the examples): used for the original, every randomized model, and Linen's default
            ``fresh`` (``model.init``).

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

        An Equinox CNN reads NCHW images; its fresh copy is the same class built with another
        key:

        >>> import equinox as eqx
        >>> def cnn(key):
        ...     k1, k2 = jax.random.split(key)
        ...     return eqx.nn.Sequential([eqx.nn.Conv2d(2, 4, 3, key=k1),
        ...                               eqx.nn.Lambda(lambda h: h.mean((1, 2))),
        ...                               eqx.nn.Linear(4, 3, key=k2)])
        >>> x = jax.random.normal(jax.random.key(2), (2, 2, 6, 6))
        >>> grad = lambda f, x, t: jax.grad(lambda x: f(x)[jnp.arange(len(x)), t].sum())(x)
        >>> r = randomization_check(cnn(jax.random.key(0)), None, x, grad,
        ...                         key=jax.random.key(1), fresh=cnn(jax.random.key(1)))
        >>> r.states, r.ssim.shape
        (('layers/2', 'layers/0'), (2, 2))

        Vectors: an ``eqx.nn.MLP``, compared by Spearman only:

        >>> mlp = eqx.nn.MLP(6, 3, 8, 1, key=jax.random.key(0))
        >>> v = jax.random.normal(jax.random.key(2), (4, 6))
        >>> r = randomization_check(mlp, None, v, grad, key=jax.random.key(1), stdev=0.1)
        >>> r.states, r.spearman.shape, r.ssim
        (('layers/1', 'layers/0'), (2, 4), None)

    References:
        Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.
    """
    x, x_check = _check_inputs(x, method, key)
    checks.check_choice(mode, "mode", MODES)
    apply_kwargs = _check_apply_kwargs(apply_kwargs)
    weights = model_weights(model, variables, apply_kwargs)
    chosen = layer_leaves(weights, layers)
    found = _analysis(model, variables, apply_kwargs, weights, x, chosen, layers is None)
    axis = found.axis
    _check_window(win_size, x, axis)
    names = found.order if layers is None else tuple(chosen)
    init_key, draw_key = jax.random.split(key)
    new_leaves = fresh_leaves(model, weights, fresh, x,
                               draw_key if stdev is not None else init_key, stdev, chosen,
                               apply_kwargs)
    predict = functools.partial(_predict, model, variables, apply_kwargs, weights, x)
    target = _check_target(target, predict, found.classes, x, x_check)
    explain = functools.partial(rebuilt.explain, model, variables, apply_kwargs, method,
                                x=x, target=target)
    try:
        a0 = explain(weights.leaves)
    except (jax.errors.JAXTypeError, rebuilt.Uncached):  # a method JAX cannot trace (NumPy),
        # or a model whose code has no key: called as it is
        def explain(leaves):
            return method(weights.rebuild(leaves), x, target)

        a0 = explain(weights.leaves)
    a0, a0_check = checks.as_like(a0, x, "the attribution of method")

    # Every state is dispatched before any map is read back: their finite checks run together
    # at the end (on an accelerator one wait, not one per state), the first failing named.
    current = list(weights.leaves)
    rows, finite = [], [a0_check]
    for i, name in enumerate(reversed(names)):
        if mode == "independent":
            current = list(weights.leaves)
        for j, leaf in zip(chosen[name], new_leaves(name, i)):
            current[j] = rebuilt.place_like(leaf, weights.leaves[j])
        a = explain(current)
        where = (f"layer {name!r} re-drawn" if mode == "independent" or i == 0 else
                 f"layer {name!r} re-drawn, with every layer after it (cascading state {i + 1} "
                 f"of {len(names)})")
        finite.append(_finite_check(functools.partial(weights.rebuild, list(current)), x, a,
                                    where, name))
        rows.append(_similarities(a0, a, win_size, axis))
    checks.run_checks(*finite)
    return _result(tuple(reversed(names)), rows)


def _result(states: tuple[str, ...], rows: list) -> RandomizationResult:
    spear, spear_abs, image = zip(*rows)
    return RandomizationResult(states, jnp.stack(spear), jnp.stack(spear_abs),
                               None if image[0] is None else jnp.stack(image))


def data_randomization_check(
    model: Any,
    variables: Any,
    x: Float[ArrayLike, "batch *feature"],
    method: Callable[..., Array],
    *,
    key: Array,
    digits: Any = None,
    target: Int[ArrayLike, " batch"] | Int[ArrayLike, ""] | None = None,
    epochs: int = 5,
    win_size: int = 5,
    apply_kwargs: Mapping[str, Any] | None = None,
) -> RandomizationResult:
    """Data randomization: retrain on shuffled labels and compare the explanations.

    The model is trained from scratch with :func:`jaxplain.data.train` on ``digits`` whose
    training labels are permuted (so nothing is learnable), and the same inputs and targets
    are explained with it. A method that explains the learned function must give dissimilar
    maps. Flax Linen models whose only variable collection is ``params`` only, since
    :func:`jaxplain.data.train` trains those (a model with BatchNorm, whose ``batch_stats``
    it does not update, raises a ``TypeError``). Maps are compared as in
    :func:`randomization_check` (no SSIM for inputs that are not images).

    Args:
        model: The Linen module (retrained from scratch; e.g. ``DigitsCNN()``).
        variables: The variables of the model trained on the true labels.
        x: ``(batch, H, W, C)`` images (or any other batch the model reads) to explain.
        method: ``method(f, x, target) -> attribution``.
        key: PRNG key for the label permutation and the training.
        digits: The training data, a :class:`jaxplain.data.Digits` (default: the embedded
            8x8 digits, :func:`jaxplain.data.load_digits`, which fit only a model reading
            ``(batch, 8, 8, 1)`` with at least 10 classes). For your own model wrap your own
            arrays: ``data.Digits(x_train=..., y_train=..., x_test=..., y_test=...)``. Data
            whose images are not shaped like ``x`` (without the batch axis), or whose labels
            reach the model's number of classes, raise a ``ValueError`` before training.
        target: Classes to explain; ``None``: the original model's prediction.
        epochs: Training epochs on the shuffled labels.
        win_size: SSIM window.
        apply_kwargs: Keyword arguments of every ``model.init`` / ``model.apply`` call, in
            training too (e.g. ``{"train": False}``).

    Returns:
        A :class:`RandomizationResult` with the single state ``"shuffled labels"``.

    References:
        Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.
    """
    from jaxplain import data
    from jaxplain.core import as_function
    from jaxplain.core._adapters import _kind
    from jaxplain.data._train import check_params_only

    kind = _kind(model)
    if kind != "linen":
        what = KINDS.get(kind, f"a {type(model).__name__}")
        raise TypeError(
            f"model must be a Flax Linen module: data_randomization_check retrains it with "
            f"jaxplain.data.train, which trains Linen modules only, got {what}. For other "
            "models, train a copy on shuffled labels yourself and compare the two maps with "
            "metrics.spearman and metrics.ssim")
    flax_params(variables)
    check_params_only(variables, "variables")
    x, x_check = _check_inputs(x, method, key)
    apply_kwargs = _check_apply_kwargs(apply_kwargs)
    checks.check_positive_int(epochs, "epochs")
    defaulted = digits is None
    digits = checks.check_digits(data.load_digits() if defaulted else digits)
    f0 = as_function(model, variables, **apply_kwargs)
    checks.check_digits_fit(digits, defaulted, "data_randomization_check retrains the model",
                            feature_shape=x.shape[1:])
    _callable(f0, x)
    axis = _channel_axis(f0, x)
    _check_window(win_size, x, axis)
    classes = checks.num_classes(f0, x)
    checks.check_digits_fit(digits, defaulted, "data_randomization_check retrains the model",
                            classes=classes)
    target = _check_target(target, lambda: jnp.argmax(f0(x), axis=-1), classes, x, x_check)
    perm_key, train_key = jax.random.split(key)
    shuffled = dataclasses.replace(
        digits, y_train=jax.random.permutation(perm_key, digits.y_train)
    )
    random_vars, _ = data.train(train_key, shuffled, model, epochs=epochs, progress=False,
                                apply_kwargs=apply_kwargs)
    a0, a0_check = checks.as_like(method(f0, x, target), x, "the attribution of method")
    f = as_function(model, random_vars, **apply_kwargs)
    a = method(f, x, target)
    checks.run_checks(a0_check, _finite_check(lambda: f, x, a,
                                              "the model trained on shuffled labels"))
    return _result(("shuffled labels",), [_similarities(a0, a, win_size, axis)])
