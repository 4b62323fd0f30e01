"""A user's model and data for ``jaxplain explain``: loaded from an import path and an .npz."""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxplain.core._channels import ChannelsLast, image_channel_axis


class ModelCallError(ValueError):
    """The model raised when first called on the data (wrong input shape, a model factory
    called as if it were the model, ...); the message names the model, the input shape and the
    underlying error."""


class ReportData(NamedTuple):
    """The examples the report's sections use (``x_*`` batch first, ``y_*`` int labels)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _is_factory(obj) -> bool:
    """A function (not a model) that takes no required argument."""
    if not inspect.isfunction(obj):
        return False
    return not any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                   for p in inspect.signature(obj).parameters.values())


def _attribute(spec: str) -> Any:
    """The object MODEL ``"package.module:name"`` names."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"MODEL must look like 'package.module:name'; got {spec!r}.")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import {module_name!r} (from MODEL {spec!r}): {e}") from e
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{module_name!r} has no attribute {attribute!r} (MODEL {spec!r}).")
        obj = getattr(obj, part)
    return obj


def load_model(spec: str, checkpoint: str | Path | None = None):
    """``(model, variables, f)`` from ``"package.module:name"``.

    ``name`` is a model (a plain function ``f(x) -> logits``, a Flax NNX or Equinox module), a
    ``(linen_module, variables)`` pair, or a function returning one of those: called with no
    argument, or with ``checkpoint`` (as a string) when one is given. An exception of that call
    becomes a ValueError naming MODEL (and the checkpoint) and the error.
    """
    import jaxplain

    obj = _attribute(spec)
    if checkpoint is not None:
        if not callable(obj):
            raise ValueError(f"--checkpoint needs MODEL to be a function of the checkpoint path; "
                             f"{spec!r} is a {type(obj).__name__}.")
        obj = _build(spec, obj, str(checkpoint))
    elif _is_factory(obj):
        obj = _build(spec, obj)
    else:
        _refuse_module_class(obj, spec)
    model, variables = obj if isinstance(obj, tuple) and len(obj) == 2 else (obj, None)
    if variables is None:
        _refuse_bare_linen(model, spec)
    try:
        return model, variables, jaxplain.as_function(model, variables)
    except TypeError as e:
        built = checkpoint is not None or _is_factory(_attribute(spec))
        what = f"returned {model!r}" if built else f"is {model!r}"
        forgot = " (does it end with 'return model'?)" if built and model is None else ""
        raise ValueError(f"MODEL {spec} {what}, not a model{forgot}: {e}.") from e


def _build(spec: str, factory, *checkpoint: str):
    """``factory(*checkpoint)``; an exception of the user's code becomes a ValueError."""
    try:
        return factory(*checkpoint)
    except Exception as e:  # noqa: BLE001 - any error of the user's code, named and re-raised
        if not checkpoint:
            raise ValueError(f"calling MODEL {spec} (a function of no argument, so taken for a "
                             f"factory of the model) failed: {type(e).__name__}: {e}") from e
        # A model called with the path trips on its type (str has no reshape, no shape, ...);
        # a loader failing to read the file is told nothing about MODEL's kind.
        advice = (f"; with --checkpoint, MODEL must be a function of the path that returns the "
                  f"model (if {spec} is the model itself, leave --checkpoint out)"
                  if isinstance(e, (TypeError, AttributeError)) else "")
        raise ValueError(f"calling MODEL {spec} with the --checkpoint path {checkpoint[0]!r} "
                         f"failed: {type(e).__name__}: {e}{advice}.") from e


def call_hint(spec: str, model, checkpoint: str | Path | None, error: ModelCallError) -> str:
    """What to try after ``model`` (from MODEL ``spec``) raised on the data: a clause to append
    to ``error``'s message, or ``""``."""
    cause = error.__cause__
    if isinstance(cause, (jax.errors.TracerArrayConversionError,
                          jax.errors.ConcretizationTypeError)):
        return ("; jaxplain traces the model with JAX (jit, grad, vmap): write it with "
                "jax.numpy, not NumPy, and without Python control flow on the input's values")
    flax_errors = sys.modules.get("flax.errors")  # a Linen model has imported it already
    if flax_errors is not None and isinstance(cause, flax_errors.ModifyScopeVariableError):
        return ("; the model updates a variable collection such as batch_stats, as a Linen "
                "module does in training mode: have MODEL return jaxplain.as_function(model, "
                "variables, train=False) (or the call argument of your module that turns "
                "training off)")
    obj = _attribute(spec)
    if (checkpoint is None and model is obj and inspect.isfunction(obj)
            and len(inspect.signature(obj).parameters) == 1):
        return (f"; if {spec} builds or restores a model from a checkpoint, pass "
                "--checkpoint PATH")
    linen, nnx = sys.modules.get("flax.linen"), sys.modules.get("flax.nnx")
    missing = re.search(r"missing \d+ required (?:positional |keyword-only )?arguments?: '(\w+)'",
                        str(cause)) if isinstance(cause, TypeError) else None
    for kind, variables in ((linen, ", variables"), (nnx, "")):
        if missing and kind is not None and isinstance(model, kind.Module):
            name = missing.group(1)
            value = {"train": "False", "training": "False", "deterministic": "True"}.get(
                name, "...")
            return (f"; {type(model).__name__} takes the call argument {name!r}: have MODEL "
                    f"return jaxplain.as_function(model{variables}, {name}={value}) to fix it")
    eqx = sys.modules.get("equinox")
    if (eqx is not None and isinstance(model, eqx.Module)
            and "per_example=False" not in str(cause)):  # as_function's own hint says more
        return (f"; jaxplain calls an Equinox module on one example at a time (vmapped over the "
                f"batch): if {type(model).__name__}.__call__ takes a batch, have MODEL return "
                "jaxplain.as_function(model, per_example=False)")
    return ""


def _refuse_bare_linen(model, spec: str) -> None:
    """A Flax Linen module class or instance alone has no weights to explain: say how to hand
    them over (an easy slip is to name the class, which would then be called with ``x``)."""
    linen = sys.modules.get("flax.linen")  # a Linen model has imported it already
    if linen is None:
        return
    if isinstance(model, type) and issubclass(model, linen.Module):
        what = f"the Flax Linen Module class {model.__name__}"
    elif isinstance(model, linen.Module):
        what = f"a Flax Linen {type(model).__name__} module without its variables"
    else:
        return
    raise ValueError(
        f"MODEL {spec!r} is {what}; point MODEL at a function that returns the module and its "
        "variables, e.g. 'def model(): m = MyModule(); return m, m.init(key, x)' (or that "
        "restores them: 'def model(path): ...' with --checkpoint PATH), or at a function "
        "returning logits, e.g. jaxplain.as_function(module, variables).")


def _refuse_module_class(obj, spec: str) -> None:
    """A Flax NNX or Equinox module class named as MODEL would be called with ``x`` as its
    constructor's argument: say to point MODEL at a function returning an instance. (A Linen
    class is refused by :func:`_refuse_bare_linen`, which also asks for its variables.)"""
    if not isinstance(obj, type):
        return
    nnx, eqx = sys.modules.get("flax.nnx"), sys.modules.get("equinox")
    if nnx is not None and issubclass(obj, nnx.Module):
        kind, example = "Flax NNX Module", f"return {obj.__name__}(nnx.Rngs(0))"
    elif eqx is not None and issubclass(obj, eqx.Module):
        kind, example = "Equinox Module", f"return {obj.__name__}(key=jax.random.key(0))"
    else:
        return
    raise ValueError(
        f"MODEL {spec!r} is the {kind} class {obj.__name__}, not an instance of it; point MODEL "
        f"at a function returning an instance, e.g. 'def model(): {example}' (with your trained "
        "weights: 'def model(path): ...' that restores them, and --checkpoint PATH).")


def _first_call(f, x: np.ndarray, model: str) -> np.ndarray:
    """``f`` of the first two examples of ``x`` as an array, once called and once traced; an
    exception of the model becomes a :class:`ModelCallError`."""
    try:
        logits = np.asarray(f(x[:2]))
        jax.eval_shape(f, x[:2])  # every method traces f (jit, grad, vmap): a NumPy model fails
        return logits
    except Exception as e:  # noqa: BLE001 - any error of the user's model, named and re-raised
        raise ModelCallError(f"calling {model} on x of shape {x.shape} (its first 2 examples) "
                             f"failed: {type(e).__name__}: {e}") from e


def _predict(f, x: np.ndarray, model: str) -> np.ndarray:
    """The arg-max of ``f(x)``: labels where the data has none; an exception of the model
    becomes a :class:`ModelCallError`."""
    try:
        return np.argmax(np.asarray(f(x)), axis=-1)
    except Exception as e:  # noqa: BLE001 - any error of the user's model, named and re-raised
        raise ModelCallError(f"calling {model} on x of shape {x.shape} (to predict the labels "
                             f"the data lacks) failed: {type(e).__name__}: {e}") from e


def _arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` at ``path``; ValueError for anything else (an ``.npy``, a
    text file, pickled objects)."""
    what = f"{path}: not an .npz written by np.savez or np.savez_compressed"
    try:
        npz = np.load(path)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError(f"{what} (it holds a single {type(npz).__name__}"
                             f"{getattr(npz, 'shape', '')}; save it with np.savez(path, x=x)).")
        with npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, EOFError, ValueError) as e:
        if str(e).startswith(what):
            raise
        raise ValueError(f"{what}: {e}") from e


def _split(path, arrays: dict) -> tuple[str, str, str | None, str | None]:
    """The keys of ``(x_train, x_test, y_train, y_test)`` in the file: ``x`` (or ``x_test``
    alone) serves as both sets; ``y_*`` keys may be None (no labels)."""
    def label(key):
        return key if key in arrays else None

    if "x" in arrays:
        return "x", "x", label("y"), label("y")
    if "x_test" in arrays and "x_train" not in arrays:
        return "x_test", "x_test", label("y_test"), label("y_test")
    if "x_train" in arrays and "x_test" in arrays:
        return "x_train", "x_test", label("y_train"), label("y_test")
    if "x_train" in arrays:
        raise ValueError(f"{path}: has 'x_train' but no 'x_test', and the report explains test "
                         "examples; add 'x_test', or save the examples as 'x' (then they serve "
                         "as both the training and the test set).")
    raise ValueError(f"{path}: expected an array 'x' (or 'x_train' and 'x_test', or 'x_test' "
                     f"alone); found {sorted(arrays) or 'none'}.")


def load_data(path: str | Path, f, *, model: str = "the model"
              ) -> tuple[ReportData, tuple[str, ...]]:
    """The examples of an ``.npz`` and the sets whose labels are the model's predictions.

    The file holds ``x`` and optional ``y``; or ``x_train``, ``x_test`` and optional
    ``y_train``, ``y_test``; or ``x_test`` and optional ``y_test`` alone. One ``x`` (or
    ``x_test`` alone) is both the training and the test set. Where a set has no labels, the
    model's predictions stand in for them: the second value names those sets (``"training"``,
    ``"test"``; empty when every label is the file's).

    Raises ValueError for a file that is not an ``.npz``, on missing or misshapen arrays
    (naming the key in the file), on training and test examples of different shapes, on
    integer inputs (uint8 images: the caller scales them, as the model expects), on non-finite
    inputs (NaN or inf), on labels outside ``[0, classes)`` and when ``f`` does not map a batch to ``(batch, classes)`` logits; :class:`ModelCallError`
    (a ValueError naming ``model``, the input shape and the error) when ``f`` raises on the
    first two test examples or on a set whose labels it predicts.
    """
    arrays = _arrays(path)
    keys = _split(path, arrays)
    for key in dict.fromkeys(keys[:2]):
        x = arrays[key]
        if x.ndim < 2 or len(x) < 2 or not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"{path}: {key} must be numeric, batch first, with at least two "
                             f"examples; got {x.dtype} {x.shape}.")
        if not np.issubdtype(x.dtype, np.floating):
            # As every method of the library does: a cast alone would explain the model on
            # inputs of another scale than it was trained on (0..255 for 0..1), silently; and
            # integers of shape (n, L), not uint8, are token ids, which have no gradient.
            if x.ndim == 2 and x.dtype != np.uint8:
                fix = ("If they are token ids, explain a model of the embeddings instead: save "
                       "the embeddings, (n, L, D), as x (e.g. np.savez(path, x=emb, y=y) with "
                       "emb = model.apply(variables, ids, method='embed')) and give a MODEL "
                       "whose function starts from them (the attribution guide, 'Token "
                       "models'). Otherwise convert the data as your model expects it")
            else:
                fix = ("Convert the data as your model expects it (e.g. x.astype('float32') / "
                       "255 for 8-bit images scaled to [0, 1])")
            raise ValueError(
                f"{path}: {key} has integer dtype {x.dtype} (values {x.min()} to {x.max()}); "
                "jaxplain explains models of floating-point inputs and does not guess their "
                f"scaling. {fix} and save the .npz again.")
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise ValueError(
                f"{path}: {key} has {bad} non-finite values (NaN or inf) out of {np.size(x)}; "
                "jaxplain explains a model on finite inputs only. Remove or repair those "
                "examples and save the .npz again.")
    x_train, x_test = (arrays[k].astype(np.float32) for k in keys[:2])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"{path}: {keys[0]} and {keys[1]} must hold examples of one shape (the "
                         f"model's input); got {keys[0]} {x_train.shape} and {keys[1]} "
                         f"{x_test.shape}.")
    logits = _first_call(f, x_test, model)
    if logits.ndim != 2 or logits.shape[0] != 2:
        raise ValueError(f"the model must map a batch (n, ...) to logits (n, classes); it maps "
                         f"{x_test[:2].shape} to {logits.shape}.")
    labels, predicted = [], []
    for name, x, key in (("training", x_train, keys[2]), ("test", x_test, keys[3])):
        if key is None:
            labels.append(_predict(f, x, model))
            predicted.append(name)
            continue
        y = arrays[key]
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            one_hot = (" (one-hot labels? save y.argmax(-1) instead)"
                       if y.shape == (len(x), logits.shape[1]) else "")
            raise ValueError(f"{path}: {key} must be int labels shaped ({len(x)},); got "
                             f"{y.dtype} {y.shape}{one_hot}.")
        classes = logits.shape[1]
        if y.size and (y.min() < 0 or y.max() >= classes):
            raise ValueError(f"{path}: {key} must be int labels in [0, {classes}) (the model "
                             f"has {classes} logits); got values {y.min()} to {y.max()}.")
        labels.append(y)
    return ReportData(x_train, labels[0], x_test, labels[1]), tuple(predicted)


def same_sets(data) -> bool:
    """Whether ``data``'s (a :class:`ReportData` or ``jaxplain.data.Digits``) training and test
    examples are the same (one ``x`` in the file)."""
    return (data.x_train.shape == data.x_test.shape
            and bool(np.array_equal(data.x_train, data.x_test)))


def channels_last(f, data: ReportData, *, model: str = "the model"
                  ) -> tuple[Any, ReportData, bool]:
    """``(f, data, moved)``: for signals, images or volumes that the model reads channels-first
    (its first convolution takes channels on axis 1, as an Equinox CNN does), the model as a
    function of channels-last inputs (NWC, NHWC, NDHWC) and the inputs moved so, since the
    report's figures and feature visualization draw and optimise channels-last inputs;
    otherwise ``f`` and ``data`` as they are. An exception of the model becomes a
    :class:`ModelCallError` naming ``model``."""
    x = data.x_test
    try:
        axis = image_channel_axis(f, x[:2]) if x.ndim in (3, 4, 5) else None
    except Exception as e:  # noqa: BLE001 - any error of the user's model, named and re-raised
        raise ModelCallError(f"tracing {model} on x of shape {x[:2].shape} to find its channels "
                             f"axis failed: {type(e).__name__}: {e}") from e
    if axis is None or axis == x.ndim - 1:
        return f, data, False
    moved = data._replace(x_train=np.moveaxis(data.x_train, axis, -1),
                          x_test=np.moveaxis(x, axis, -1))
    return ChannelsLast(f, axis), moved, True
