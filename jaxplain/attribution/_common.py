"""Shared plumbing for attribution methods: input checks, target logits, chunked sums.

Every public method validates its arguments here, before any tracing, and then calls a private
implementation compiled with ``jax.jit`` and the model function as a static argument, so a
second call with the same function and shapes reuses the compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.attribution._value_checks import (Check, check_no_nan, is_traced, nan_check,
                                                 run_checks)
from jaxplain.core._adapters import refuse_module
from jaxplain.core._affine import AffineStem, affine_stem
from jaxplain.core._capture import model_error_hint, warn_about_model
from jaxplain.core._chunks import auto_chunk
from jaxplain.core._layout import fast_convolutions
from jaxplain.core._cpu import cpu_friendly, sum_leading
from jaxplain.core._function_cache import per_function
from jaxplain.core._reinterpret import match_varying, zeros_varying_like


def wide(dtype: Any) -> jnp.dtype:
    """The dtype of jaxplain's own arithmetic around a model that runs in `dtype`: `dtype`, or
    float32 where it is narrower (bfloat16, float16)."""
    return jnp.promote_types(dtype, jnp.float32)


def widen(a: jax.Array) -> jax.Array:
    """`a` in :func:`wide` of its dtype (`a` itself in float32 or float64)."""
    return a.astype(wide(a.dtype))


def check_function(f: Callable, name: str = "f") -> None:
    refuse_module(f, name)
    if not callable(f):
        raise TypeError(f"{name} must be a callable mapping a batch to logits; got {type(f).__name__}")
    try:
        hash(f)
    except TypeError as err:
        fix = ("declare it @dataclass(eq=False) (compared by identity; eq=True hashes its fields, "
               "and arrays are unhashable) or wrap it in a plain function"
               if dataclasses.is_dataclass(f) else "wrap it in a plain function")
        raise TypeError(
            f"{name} must be hashable (it is a static argument of the compiled method); got an "
            f"unhashable {type(f).__name__}: {fix}."
        ) from err


def check_x(x: Any, *, token_ids: bool = False) -> jax.Array:
    """`x` as a floating-point JAX array with a batch axis (or integer token ids, where
    `token_ids`), or a clear error; a concrete `x` holding NaN is refused
    (:func:`check_no_nan`), a traced one (an argument of the user's ``jit`` or ``vmap``)
    cannot be checked."""
    x = _as_x(x, token_ids)
    check_no_nan(x)
    return x


def _as_x(x: Any, token_ids: bool = False) -> jax.Array:
    """:func:`check_x` without the NaN check (its values are not read)."""
    if isinstance(x, dict) or (isinstance(x, (tuple, list))
                               and any(hasattr(v, "shape") for v in x)):
        raise TypeError(
            f"x must be one array, the batch of inputs; got a {type(x).__name__} of inputs. "
            "jaxplain explains a function of one array: for a model of several inputs, explain "
            "one with a closure over the others (f = lambda image: model(image, meta)), or all "
            "at once as one flat array split inside f (the attribution guide, 'Models with "
            "several inputs').")
    if not hasattr(x, "dtype"):
        x = np.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating) and not (
            token_ids and jnp.issubdtype(x.dtype, jnp.integer)):
        raise not_floating(x)
    if jnp.ndim(x) < 1:
        raise ValueError(f"x must have a batch axis first; got a scalar of shape {jnp.shape(x)}")
    return x if isinstance(x, jax.Array) else jnp.asarray(x)


def not_floating(x: Any, why: str = "") -> TypeError:
    """The error for an `x` that is not floating-point (`why`: what else failed), with the
    advice that fits it: token ids (integers of shape ``(n, L)``) first, else pixels."""
    scale = ("convert it as the model saw it in training, e.g. x.astype(jnp.float32) / 255 for "
             "raw pixels of a model trained on [0, 1] (a bare cast explains the model at another "
             "scale)")
    if x.dtype == jnp.bool_:
        advice = ("If it holds presence flags, the perturbation methods (feature_ablation, "
                  "occlusion, shapley_sampling, kernel_shap, lime) take them as integer codes: "
                  "pass x.astype(jnp.int32) with a baseline of 0 or 1 and a model that reads "
                  "0/1 codes (f = lambda z: g(z.astype(bool))); the gradient methods need a "
                  "model of floats (x.astype(jnp.float32)).")
    elif (jnp.issubdtype(x.dtype, jnp.integer) and x.dtype != jnp.uint8
            and jnp.ndim(x) == 2):
        advice = ("If it holds token ids, explain a function of the embeddings (the attribution "
                  "guide's section on token models), or attribute at the embedding's site: "
                  "layer_integrated_gradients and activation_x_gradient take the ids of a model "
                  f"of ids with site=. Otherwise {scale}.")
    else:
        advice = scale[0].upper() + scale[1:] + "."
    return TypeError(f"x must be a floating-point array (a batch of inputs); got dtype {x.dtype}"
                     f"{why}. {advice}")


def evaluation_error(f: Callable, shape: tuple, dtype: Any, err: Exception) -> ValueError:
    """The error for a model `f` that failed with `err` on an input of `shape` and `dtype`:
    what failed, with the fix of a known cause (Dropout in training mode; a closure over a Flax
    NNX module that updates its state; an `x` without its batch axis, where `f` runs on
    ``x[None]``)."""
    return ValueError(f"The model could not be evaluated on an input of shape {tuple(shape)} "
                      f"and dtype {dtype}: {err}{model_error_hint(err)}"
                      f"{batch_axis_hint(f, shape, dtype)}")


def batch_axis_hint(f: Callable, shape: tuple, dtype: Any) -> str:
    """A hint for an `x` of `shape` that is one example without its batch axis: where `f`
    maps ``x[None]`` to one row of logits ``(1, classes)``; else ""."""
    try:
        out = jax.eval_shape(f, jax.ShapeDtypeStruct((1,) + tuple(shape), dtype))
    except Exception:  # noqa: BLE001 - f fails there too: no hint
        return ""
    if len(getattr(out, "shape", ())) != 2 or out.shape[0] != 1:
        return ""
    return (f" (f maps a batch of shape {(1,) + tuple(shape)} to logits {tuple(out.shape)}: x "
            "looks like one example without its batch axis; pass x[None])")


@per_function(maxsize_fallback=512)
def _output_shape(f: Callable, shape: tuple, dtype: Any) -> tuple:
    """The shape of ``f`` on an input of `shape` and `dtype` (its abstract evaluation), cached
    per function without keeping the function alive (:func:`per_function`)."""
    return _evaluate_shape(f, shape, dtype)


def _evaluate_shape(f: Callable, shape: tuple, dtype: Any) -> tuple:
    try:
        out = jax.eval_shape(f, jax.ShapeDtypeStruct(shape, dtype))
    except Exception as err:  # noqa: BLE001 - any failure of f at this shape, re-raised with context
        raise evaluation_error(f, shape, dtype, err) from err
    if not hasattr(out, "shape"):
        shapes = jax.tree.map(lambda a: tuple(a.shape), out)
        raise TypeError(f"f must return one array, the logits (batch, classes); got a "
                        f"{type(out).__name__} of shapes {shapes}. Return the logits only (a "
                        f"model that also returns its state: wrap it, or run it in inference mode)")
    return tuple(out.shape)


def check_batch_of(f: Callable, x: Any, m: int, how: str, *, instead: str | None = None) -> None:
    """Refuse clearly a model that cannot take the batch of `m` inputs it is evaluated on (`how`
    says what the batch holds), or that does not map it to `m` rows of outputs (a model of one
    graph wrapped as ``lambda x: g(x[0])[None]`` passes at a batch of 1 and gives one row at
    any batch); `x` (or its shape and dtype) is the caller's batch. `instead` is what else
    works for the caller (e.g. ``"pass batch_size=1"``), said before the ways out that work
    for every caller, method or metric."""
    n = x.shape[0]
    if m == n:
        return
    try:
        out = _output_shape(f, (m,) + tuple(x.shape[1:]), jnp.dtype(x.dtype))
    except ValueError as err:
        ways = ("explain one example at a time, with f closing over that example's arrays with a "
                "batch axis of 1 (a padding mask of batch 1 broadcasts to any batch; broadcast a "
                "second input to the batch f is given, inside f), or pass the other inputs "
                "inside x (the attribution guide, 'Models with several inputs')")
        ways = f"{instead}; or {ways}" if instead else ways
        raise ValueError(
            f"f is evaluated here on {how}: a batch of {m} inputs, not x's {n}, and fails on it. "
            "A model that closes over arrays with a batch axis of their own (a second input, a "
            f"padding mask) only takes batches of that size. {ways[0].upper()}{ways[1:]}. The "
            f"failure: {err}") from None
    if out[:1] != (m,):
        ways = ("give f a leading batch axis of independent examples: f = jax.vmap(g), for g "
                "mapping one example (one graph) to its logits")
        ways = f"{instead}; or {ways}" if instead else ways
        raise ValueError(
            f"f is evaluated here on {how}: a batch of {m} inputs, not x's {n}, and gives an "
            f"output of shape {out}: f must map a batch of {m} examples to {m} rows of outputs, "
            "one per example, at any batch size (a model of one graph wrapped as "
            f"lambda x: g(x[0])[None] reads example 0 only). {ways[0].upper()}{ways[1:]}.")


def output_shape(f: Callable, x: jax.Array) -> tuple:
    """The shape of ``f(x)`` (cached per function and input shape)."""
    return _output_shape(f, tuple(x.shape), jnp.dtype(x.dtype))


def check_target(f: Callable, x: jax.Array, target: Any, name: str = "target") -> jax.Array:
    """`target` as an int32 array of shape ``(batch,)``; range-checked when concrete. Every
    method checks its `f` here, so this is where it warns, the first time it meets `f` at this
    shape, when `f` mixes the examples of the batch (a BatchNorm using batch statistics):
    :func:`jaxplain.core.mixes_batch`, cached per function and shape."""
    t, check = _target(f, x, target, name)
    run_checks(check)
    return t


def callable_target_error(name: str = "target", after: str = "") -> TypeError:
    """The error for a function given as `name`, a target: say how to explain another quantity
    of the output (`after`: a sentence more)."""
    return TypeError(f"{name} must be class indices, not a function: to explain another "
                     "quantity of the output, explain a function that returns it, e.g. "
                     f"lambda x: g(f(x))[:, None] with target 0.{after}")


def _target(f: Callable, x: jax.Array, target: Any, name: str) -> tuple[jax.Array, Check | None]:
    """:func:`check_target`'s int32 target, and its range check to run (its values unread)."""
    out = output_shape(f, x)
    if len(out) != 2 or out[0] != x.shape[0]:
        why = (". For one output per example (a regression), explain lambda x: f(x)[:, None] "
               "with target 0." if out == tuple(x.shape[:1]) else
               f"{batch_axis_hint(f, x.shape, x.dtype)}.")
        raise ValueError(f"f must map a batch of shape {tuple(x.shape)} to logits of shape "
                         f"({x.shape[0]}, classes); got an output of shape {out}{why}")
    warn_about_model(f, x)
    classes = out[1]
    if target is None:
        one = " (f has one output: target=0)" if classes == 1 else ""
        raise ValueError(f"{name} is required: an int class index per example, shape ({x.shape[0]},) "
                         f"or a scalar{one}")
    if callable(target):
        raise callable_target_error(name)
    t = target if isinstance(target, jax.Array) else np.asarray(target)
    if not jnp.issubdtype(t.dtype, jnp.integer):
        kind = "an integer array" if is_traced(t) else "integer class indices"
        raise TypeError(f"{name} must be {kind}; got dtype {t.dtype}")
    n = x.shape[0]
    if jnp.ndim(t) not in (0, 1) or (jnp.ndim(t) == 1 and t.shape[0] != n):
        raise ValueError(f"{name} must be a scalar or have shape ({n},); got shape {jnp.shape(t)}")
    if isinstance(t, jax.Array) and t.dtype == jnp.int32 and t.shape == (n,) and not t.weak_type:
        out = t  # already on the device as it should be: no copy
    elif isinstance(t, np.ndarray):  # one host-to-device copy, no device ops
        out = jnp.asarray(np.broadcast_to(t.astype(np.int32), (n,)))
    else:
        out = jnp.broadcast_to(t.astype(jnp.int32), (n,))

    def error(found):
        return ValueError(f"{name} out of range: got values in [{found[0]}, {found[1]}], "
                          f"expected class indices in [0, {classes - 1}] (f has {classes} "
                          "outputs)")
    return out, Check("range", t, error, classes, alias=out)


def check_arguments(f: Callable, x: Any, target: Any) -> tuple[jax.Array, jax.Array]:
    """The checks of the arguments every method takes, in order: `f` (:func:`check_function`),
    `x` (:func:`check_x`) and `target` (:func:`check_target`). Returns ``(x, target)``: `x` as
    a JAX array, `target` as int32 of shape ``(batch,)``."""
    check_function(f)
    return _values_checked(f, _as_x(x), target)


def _values_checked(f: Callable, x: jax.Array, target: Any) -> tuple[jax.Array, jax.Array]:
    """``(x, target)`` once `target` is checked and `x`'s NaN and `target`'s range are found
    fine together (:func:`run_checks`: one read-back on an accelerator)."""
    t, check = _target(f, x, target, "target")
    run_checks(nan_check(x), check)
    return x, t


def _integer_arguments(f: Callable, x: Any, target: Any,
                       model: str) -> tuple[jax.Array, jax.Array]:
    """:func:`check_arguments`, where integer `x` passes if `f` evaluates on it (else it is no
    `model`); uint8 (pixels, to be scaled) does not."""
    check_function(f)
    x = _as_x(x, token_ids=True)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        if x.dtype == jnp.uint8:
            raise not_floating(x)
        try:
            output_shape(f, x)
        except ValueError as err:
            raise not_floating(x, f" (f fails on integers: it is no {model})") from err
    return _values_checked(f, x, target)


def check_site_arguments(f: Callable, x: Any, target: Any) -> tuple[jax.Array, jax.Array]:
    """:func:`check_arguments` for a method that differentiates at a site, not at `x`: integer
    `x` (token ids) passes where `f` evaluates on it (a model of ids, whose embedding is the
    site); uint8 (pixels, to be scaled) does not."""
    return _integer_arguments(f, x, target, "model of token ids")


def check_evaluating_arguments(f: Callable, x: Any,
                               target: Any) -> tuple[jax.Array, jax.Array]:
    """:func:`check_arguments` for a method that only evaluates `f` on inputs whose elements it
    takes from `x` or the baseline (ablation, occlusion, Shapley values, surrogates): integer
    `x` (category codes) passes where `f` evaluates on it; uint8 (pixels, to be scaled) does
    not. Give the result :func:`result_dtype`."""
    return _integer_arguments(f, x, target, "model of integer codes")


def result_dtype(dtype: Any) -> jnp.dtype:
    """The dtype of attributions of inputs of `dtype`: `dtype` itself, or float32 for integer
    codes."""
    return jnp.dtype(dtype) if jnp.issubdtype(dtype, jnp.floating) else wide(dtype)


def check_baseline(baseline: Any, x: jax.Array, name: str = "baseline", *,
                   method: str = "method") -> jax.Array:
    """A baseline broadcast to ``x.shape`` (None means zeros), in `x`'s dtype: for integer `x`
    (codes), integer values. `method` names the caller in the recipe for a background."""
    if baseline is None:
        return jnp.zeros_like(x)
    return jnp.broadcast_to(baseline_value(baseline, x, name, method=method), x.shape)


def baseline_value(baseline: Any, x: jax.Array, name: str = "baseline", *,
                   method: str = "method") -> np.ndarray | jax.Array:
    """:func:`check_baseline` without the broadcast, for a compiled method to broadcast with
    :func:`full_baseline`, so that no array of `x`'s size is made eagerly on every call: the
    baseline in `x`'s dtype at its own shape (broadcastable to `x`'s; None: a zero scalar),
    still a NumPy array where it was given on the host (the compiled method's call moves it to
    the device, at a fraction of an eager ``jnp.asarray``'s cost)."""
    if baseline is None:
        return np.zeros((), x.dtype)
    takes = (f"{name} must be None (zeros), a number, or an array broadcastable to x's shape "
             f"{tuple(x.shape)}")
    if isinstance(baseline, str):  # a ValueError, as the metrics' for a spelling they lack
        raise ValueError(f"{takes}; got the string {baseline!r}. \"zeros\", \"mean\" and "
                         "\"blur\" are the metrics' spellings: here pass None or 0.0 for zeros, "
                         "or the array itself (x.mean(axis=(1, 2), keepdims=True): each image's "
                         "channel means)")
    try:
        b = baseline if hasattr(baseline, "shape") else np.asarray(baseline)  # in x's dtype below
        if b.dtype == object:
            raise TypeError
    except (TypeError, ValueError):
        raise TypeError(f"{takes}; got {type(baseline).__name__} {baseline!r:.80}") from None
    try:
        shape = np.broadcast_shapes(np.shape(b), tuple(x.shape))
    except ValueError:
        shape = None
    if shape != tuple(x.shape):
        background = ""
        if np.ndim(b) == x.ndim and tuple(np.shape(b)[1:]) == tuple(x.shape[1:]):
            background = (
                f" ({np.shape(b)[0]} reference inputs: one baseline per example, or one for "
                "all, is taken). For a background distribution, average over it: "
                f"jax.vmap(lambda b: {method}(f, x, target, baseline=b))(background).mean(0), "
                "which for Shapley values is interventional SHAP (the attributions sum to "
                "f(x)_t - mean_b f(b)_t)")
        raise ValueError(f"{name} must be a scalar or broadcastable to x's shape {tuple(x.shape)}; "
                         f"got shape {np.shape(b)}{background}")
    kind = jnp.result_type(b)
    if not jnp.issubdtype(kind, jnp.floating) and not jnp.issubdtype(kind, jnp.integer):
        raise TypeError(f"{name} must be numeric; got dtype {kind}")
    if jnp.issubdtype(x.dtype, jnp.integer) and not jnp.issubdtype(kind, jnp.integer):
        values = None if is_traced(b) else np.asarray(b)
        if values is None or not np.array_equal(values, np.round(values)):
            raise TypeError(f"{name} must hold integer codes like x ({x.dtype}), e.g. one "
                            f"reference category per feature; got {kind} values"
                            + ("" if values is None else " that are not whole numbers"))
    return jnp.asarray(b, x.dtype) if isinstance(b, jax.Array) else np.asarray(b, x.dtype)


def full_baseline(baseline: np.ndarray | jax.Array, x: jax.Array) -> jax.Array:
    """Inside a compiled method: a baseline of :func:`baseline_value` at `x`'s shape, varying
    per device as `x` does inside a `jax.shard_map` (as ``jnp.zeros_like(x)`` would)."""
    return match_varying([jnp.broadcast_to(baseline, x.shape), x])[0][0]


def check_baselines(baselines: Any, x: jax.Array, name: str = "baselines") -> jax.Array:
    """A distribution of reference inputs, shape ``(m, *x.shape[1:])``, in `x`'s dtype."""
    if baselines is None:
        raise ValueError(f"{name} is required: an array of reference inputs of shape (m, "
                         f"{', '.join(map(str, x.shape[1:]))}), m >= 1")
    b = baselines if hasattr(baselines, "shape") else np.asarray(baselines)
    if not (jnp.issubdtype(b.dtype, jnp.floating) or jnp.issubdtype(b.dtype, jnp.integer)):
        raise TypeError(f"{name} must be numeric; got dtype {b.dtype}")
    if np.ndim(b) != x.ndim or tuple(np.shape(b)[1:]) != tuple(x.shape[1:]) or not np.shape(b)[0]:
        hint = (" (one baseline b of one example's shape: pass b[None])"
                if tuple(np.shape(b)) == tuple(x.shape[1:]) else "")
        raise ValueError(f"{name} must have shape (m, {', '.join(map(str, x.shape[1:]))}), m >= 1: "
                         f"reference inputs with one example's shape; got shape {np.shape(b)}"
                         f"{hint}")
    return jnp.asarray(b, x.dtype)


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")
    return int(value)


def check_batch_size(batch_size: Any) -> int | None:
    if batch_size is None:
        return None
    return check_positive_int(batch_size, "batch_size")


def selected(f: Callable, x: jax.Array, target: jax.Array) -> jax.Array:
    """``f(x)[i, target[i]]`` for every example, shape ``(batch,)``."""
    logits = f(x)
    return jnp.take_along_axis(logits, target[:, None], axis=1)[:, 0]


def nan_where_not_finite(values: jax.Array, grads: Any) -> Any:
    """`grads` with every example whose target value is not finite made NaN.

    `values` ``(batch,)`` (or ``(..., batch)``: leading item axes) are the target outputs;
    each leaf of `grads` whose leading axes are ``values.shape`` gets NaN in those rows, any
    other leaf (a site value without the batch axis first) NaN everywhere when any value is
    not finite. A NaN or infinite target has no meaningful gradient: a ReLU's backward
    ``where(z > 0, g, 0)`` would zero the NaN and give a finite, plausible map."""
    ok = jnp.isfinite(values)

    def mask(g):
        if g.shape[:ok.ndim] != ok.shape:
            return jnp.where(ok.all(), g, jnp.nan)
        return jnp.where(ok.reshape(ok.shape + (1,) * (g.ndim - ok.ndim)), g, jnp.nan)

    return jax.tree_util.tree_map(mask, grads)


def selected_gradient(out: Callable, args: Any) -> Any:
    """The gradient at `args` of ``out(args).sum()``, `out` mapping them to the target values
    of the batch ``(batch,)``: taken by one ``jax.vjp``, whose forward pass gives the values
    for free, and NaN in the examples whose value is not finite
    (:func:`nan_where_not_finite`)."""
    values, pullback = jax.vjp(out, args)
    return nan_where_not_finite(values, pullback(jnp.ones_like(values))[0])


def target_gradient(f: Callable, x: jax.Array, target: jax.Array) -> jax.Array:
    """The gradient of the sum over the batch of the target logits, shaped like `x`; NaN in
    the examples whose target logit is not finite (:func:`selected_gradient`).

    On CPU, pools, few-position and 1x1 convolutions are rewritten first
    (:mod:`jaxplain.core._cpu`): the same gradient, computed faster by XLA:CPU."""
    return selected_gradient(lambda z: selected(cpu_friendly(f), z, target), x)


def loop_body(fn: Callable, passes: int) -> Callable:
    """`fn` as the body of a loop of `passes` iterations: its convolutions in XLA:CPU's fast
    layout (:mod:`jaxplain.core._layout`), which XLA does not use inside a loop, and, where the
    loop has more than one iteration, rematerialized (``jax.checkpoint``).

    Without the checkpoint, reverse-mode through the loop (a gradient of an attribution: with
    respect to ``x``, or to the model's weights in training through an explanation) keeps every
    iteration's intermediates, memory linear in the number of items whatever ``batch_size``;
    with it, one iteration's, and each iteration runs once more in the backward pass. A
    forward-only call compiles to the same program (the checkpoint acts only when
    differentiated). One iteration has nothing to bound, and is left as it is.
    """
    body = fast_convolutions(fn)  # prevent_cse=False: a loop body is not merged with its rerun
    return jax.checkpoint(body, prevent_cse=False) if passes > 1 else body


def chunked_reduce(chunk_fn: Callable, xs: Any, batch_size: int | None) -> Any:
    """``sum`` of ``chunk_fn(chunk)`` over chunks of `batch_size` items of `xs` (leading axis).

    `chunk_fn` takes a chunk of items and returns their summed contribution (a pytree). The
    chunks are accumulated with ``lax.scan`` of :func:`loop_body`, so memory holds one chunk
    whatever the number of items, also when the result is differentiated;
    ``batch_size=None`` picks the chunk (:func:`jaxplain.core._chunks.auto_chunk`: all items
    on GPU/TPU, on CPU as many as keep a pass fast).
    """
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    batch_size = auto_chunk(batch_size, chunk_fn, xs)
    if batch_size >= n:
        return chunk_fn(xs)
    add = functools.partial(jax.tree_util.tree_map, jnp.add)
    full, rest = divmod(n, batch_size)
    head = jax.tree_util.tree_map(
        lambda a: a[:full * batch_size].reshape((full, batch_size) + a.shape[1:]), xs)
    first = jax.tree_util.tree_map(lambda a: a[:batch_size], xs)
    init = jax.tree_util.tree_map(zeros_varying_like, jax.eval_shape(chunk_fn, first))
    body = loop_body(chunk_fn, full)
    acc, _ = jax.lax.scan(lambda a, chunk: (add(a, body(chunk)), None), init, head)
    if rest:
        acc = add(acc, chunk_fn(jax.tree_util.tree_map(lambda a: a[full * batch_size:], xs)))
    return acc


def merge_moments(a: tuple, b: tuple, share: jax.Array) -> tuple:
    """The mean and population variance of two groups of items from each group's ``(mean,
    variance)``, `share` the second group's fraction of the items (Chan, Golub, LeVeque's
    parallel formula). Every term is at most about the result, so a finite variance does not
    overflow on the way; a first group of no items (``share == 1``) gives `b` itself."""
    (mean_a, var_a), (mean_b, var_b) = a, b
    rest = 1 - share
    delta = mean_b - mean_a
    between = jnp.where(rest > 0, jnp.square(delta * jnp.sqrt(rest * share)), 0)
    return mean_a + share * delta, rest * var_a + share * var_b + between


def chunked_moments(chunk_fn: Callable, xs: Any, batch_size: int | None) -> tuple:
    """``(mean, variance)`` over the items `xs` (leading axis), where ``chunk_fn(chunk)`` gives
    a chunk's own ``(mean, population variance)``: the chunks merged in turn by
    :func:`merge_moments`, in ``lax.scan`` of :func:`loop_body` as :func:`chunked_reduce`, so
    memory holds one chunk. No sum of squares is formed: no cancellation when the mean is large
    beside the spread, and no overflow where the variance is finite."""
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    c = auto_chunk(batch_size, chunk_fn, xs)
    if c >= n:
        return chunk_fn(xs)
    full, rest = divmod(n, c)
    head = jax.tree_util.tree_map(lambda a: a[:full * c].reshape((full, c) + a.shape[1:]), xs)
    first = jax.tree_util.tree_map(lambda a: a[:c], xs)
    init = jax.tree_util.tree_map(zeros_varying_like, jax.eval_shape(chunk_fn, first))
    body = loop_body(chunk_fn, full)

    def step(acc, item):
        k, chunk = item  # k chunks merged so far
        return merge_moments(acc, body(chunk), 1 / (k + 1).astype(acc[0].dtype)), None

    acc, _ = jax.lax.scan(step, init, (jnp.arange(full), head))
    if rest:
        tail = chunk_fn(jax.tree_util.tree_map(lambda a: a[full * c:], xs))
        acc = merge_moments(acc, tail, rest / n)
    return acc


def chunked_sum(fn: Callable, xs: Any, batch_size: int | None) -> Any:
    """``sum_i fn(xs[i])`` over the leading axis, vmapping `batch_size` items at a time."""
    return chunked_reduce(
        lambda items: jax.tree_util.tree_map(sum_leading, jax.vmap(fn)(items)), xs, batch_size)


def sum_second(a: jax.Array) -> jax.Array:
    """``a.sum(axis=1)``: the items folded behind each example of a batch-first ``(n, c, ...)``.

    XLA:CPU reduces an inner axis at the speed of a matrix-vector product (unlike the leading
    axis, :func:`jaxplain.core._cpu.sum_leading`), and the batch axis stays where a sharding
    put it."""
    return a.sum(axis=1)


def takes_batch(f: Callable, x: Any, m: int) -> bool:
    """Whether `f` evaluates on a batch of `m` inputs shaped like those of `x` (or its shape
    and dtype); a model closing over arrays with `x`'s batch axis does not."""
    if m == x.shape[0]:
        return True
    try:
        out = _output_shape(f, (m,) + tuple(x.shape[1:]), jnp.dtype(x.dtype))
    except ValueError:
        return False
    return out[:1] == (m,)


def fold(a: jax.Array) -> jax.Array:
    """``(n, c, ...) -> (n * c, ...)``: `c` items per example folded into the batch, example
    by example, so that a batch split over devices stays split (folding item-major,
    ``(c, n, ...)``, would interleave the split axis and make XLA gather the whole batch)."""
    return a.reshape((a.shape[0] * a.shape[1],) + a.shape[2:])


def folded_values(f: Callable, x: jax.Array, target: jax.Array, inputs: Callable, items: Any,
                  batch_size: int | None) -> jax.Array:
    """``(m, n)``: the target's output ``f(z_k)_t`` at each item's inputs, where `inputs` maps
    a chunk of ``c`` items to their inputs ``(n, c, *x.shape[1:])``, example-major.

    Each chunk of `batch_size` items (None: :func:`jaxplain.core._chunks.auto_chunk`) is one
    batch of ``n * c`` inputs folded example by example (:func:`fold`), so a batch split over
    devices stays split; the chunks run in ``lax.map`` of :func:`loop_body`. A model that takes
    only `x`'s batch gets the items one at a time, vmapped (:func:`chunked_map`).
    """
    n = x.shape[0]
    m = jax.tree_util.tree_leaves(items)[0].shape[0]

    def chunk(chunk_items):
        k = jax.tree_util.tree_leaves(chunk_items)[0].shape[0]
        return selected(f, fold(inputs(chunk_items)), jnp.repeat(target, k)).reshape(n, k).T

    c = auto_chunk(batch_size, chunk, items)
    full, rest = divmod(m, c)
    if not takes_batch(f, x, n * c) or (rest and not takes_batch(f, x, n * rest)):
        def one(item):
            z = inputs(jax.tree_util.tree_map(lambda a: a[None], item))[:, 0]
            return selected(f, z, target)

        return chunked_map(one, items, batch_size)

    if c == m:
        return chunk(items)
    head = jax.tree_util.tree_map(lambda a: a[:full * c].reshape((full, c) + a.shape[1:]), items)
    out = jax.lax.map(loop_body(chunk, full), head).reshape(full * c, n)
    if rest:
        tail = jax.tree_util.tree_map(lambda a: a[full * c:], items)
        out = jnp.concatenate([out, chunk(tail)])
    return out


def folded_gradient_sum(f: Callable, points: Callable, target: jax.Array, xs: Any, weights,
                        batch_size: int | None, shape: tuple, *,
                        scale: Callable | None = None) -> jax.Array:
    """``sum_k weights[k] * scale(xs[k]) * grad f_t(points(xs[k]))``, folding the items into
    the batch axis.

    Instead of vmapping `f` over the items, each chunk of ``c`` items becomes one batch of
    ``n * c`` inputs (as Captum does), which keeps `f` a plain batched call. `points` maps an
    item to inputs of `shape`; `scale` (None: 1) maps an item to an array broadcastable to
    `shape` that multiplies its gradient (GradientSHAP's ``x - b`` differs per item). As
    :func:`folded_gradients`, which takes the chunk's points at once.
    """
    per_item = functools.partial(jax.vmap, out_axes=1)  # (n, c, ...)

    def chunk_points(item):
        scales = None if scale is None else per_item(
            lambda i: jnp.broadcast_to(scale(i), shape))(item)
        return per_item(points)(item), scales

    return folded_gradients(f, chunk_points, target, xs, weights, batch_size, shape)


def folded_gradients(f: Callable, chunk_points: Callable, target: jax.Array, xs: Any, weights,
                     batch_size: int | None, shape: tuple) -> jax.Array:
    """``sum_k weights[k] * scale_k * grad f_t(points_k)`` over the items `xs`, their gradients
    taken on one batch of ``n * c`` inputs per chunk of ``c`` items.

    `chunk_points` maps a chunk of items to ``(points, scale)``: the inputs, shape
    ``(n, c, *shape[1:])``, example-major, in the dtype `f` is to see, and an array
    broadcastable to it (or None: 1). The batch is folded example by example (:func:`fold`),
    so it stays sharded like `x`; a method whose points come from per-item draws (random
    noise) can lay them out batch-first once, where vmapping per item would transpose every
    intermediate. The gradients are weighted and summed in :func:`wide` of their dtype, the
    dtype of the result. CPU rewrites as in :func:`target_gradient`; `batch_size` None:
    :func:`jaxplain.core._chunks.auto_chunk`.
    """
    given, friendly = f, cpu_friendly(f)

    def chunk(items):
        item, w = items
        n, c = shape[0], w.shape[0]
        z, scales = chunk_points(item)
        g = selected_gradient(lambda v: selected(friendly, v, jnp.repeat(target, c)), fold(z))
        g = widen(g).reshape((n, c) + shape[1:]) * w.reshape((1, c) + (1,) * (len(shape) - 1))
        return sum_second(g if scales is None else g * scales)

    first = jax.tree_util.tree_map(lambda a: a[:1], (xs, weights))
    z = jax.eval_shape(lambda item: chunk_points(item[0])[0], first)
    c = auto_chunk(batch_size, chunk, (xs, weights))
    check_batch_of(given, jax.ShapeDtypeStruct(shape, z.dtype), shape[0] * c,
                   "each example's samples or steps folded into the batch",
                   instead="pass batch_size=1 (one sample or step of each example at a time: "
                   "batches of x's size)")
    return chunked_reduce(chunk, (xs, weights), c)


def _folded_stem(f: Callable, stem: AffineStem, start: jax.Array, c: int) -> AffineStem | None:
    """`f`'s affine stem traced at a batch of ``n * c`` inputs, when its frontier values are
    those of `stem` (batch ``n``) folded: the same split, each value batch-first. None when `f`
    does not take that batch or the frontier does not fold so."""
    n = start.shape[0]
    if c == 1:  # no other batch to trace, but the frontier must still be batch-first
        big = stem
    elif not takes_batch(f, start, n * c):
        return None
    else:
        big = affine_stem(f, jax.ShapeDtypeStruct((n * c,) + tuple(start.shape[1:]),
                                                  start.dtype))
        if big is None or big.frontier != stem.frontier or big.in_head != stem.in_head:
            return None
    for r in stem.frontier:
        small, large = stem.program.avals[r].shape, big.program.avals[r].shape
        if not small or small[0] != n or tuple(large) != (n * c,) + tuple(small[1:]):
            return None
    return big


def _along(a: jax.Array, u: jax.Array, v: jax.Array, axis: int) -> jax.Array:
    """The points ``u + a_k (v - u)`` for the alphas `a` stacked on `axis`, computed in the
    alphas' dtype and cast to `u`'s, the dtype `f` sees there."""
    u, v = jnp.expand_dims(u, axis), jnp.expand_dims(v, axis)
    a = a.reshape((1,) * axis + (-1,) + (1,) * (u.ndim - axis - 1))
    return (widen(u) + a * (widen(v) - widen(u))).astype(u.dtype)


def line_gradient_sum(f: Callable, start: jax.Array, end: jax.Array, target: jax.Array,
                      alphas: jax.Array, weights: jax.Array, batch_size: int | None) -> jax.Array:
    """``sum_k weights[k] * grad f_t(start + alphas[k] (end - start))``, shaped like `start`.

    When `f` begins with an affine stem (:func:`jaxplain.core._affine.affine_stem`: a first
    convolution or dense layer, say), the stem runs on `start` and `end` only: its values at the
    points are interpolated, and the summed gradient at its frontier is pulled back through it
    once. The rest of `f` runs on the points folded into the batch, example-major as in
    :func:`folded_gradient_sum`, `batch_size` of them at a time (vmapped over the points where
    the frontier does not fold). The points are interpolated in the dtype of `alphas` (give
    them in :func:`wide` of `start`'s) and cast to the dtype `f` sees there (the stem's output
    may be narrower than `start`); the sum comes back in :func:`wide` of `start`'s dtype.
    """
    stem = affine_stem(f, jax.ShapeDtypeStruct(start.shape, start.dtype))
    if stem is None:
        u, d = widen(start), widen(end) - widen(start)
        return folded_gradient_sum(f, lambda a: (u + a * d).astype(start.dtype), target,
                                   alphas, weights, batch_size, start.shape)
    first, last = stem.head(start), stem.head(end)
    n = start.shape[0]

    def folded(a, w, big):
        tail = cpu_friendly(big.tail)
        c = a.shape[0]
        points = tuple(fold(_along(a, u, v, 1)) for u, v in zip(first, last))
        targets = jnp.repeat(target, c)
        grads = selected_gradient(lambda values: jnp.take_along_axis(
            tail(*values), targets[:, None], axis=1)[:, 0], points)
        return tuple(sum_second(widen(g).reshape((n, c) + g.shape[1:])
                                * w.reshape((1, c) + (1,) * (g.ndim - 1))) for g in grads)

    def vmapped(a, w):
        tail = cpu_friendly(jax.vmap(stem.tail))
        points = tuple(_along(a, u, v, 0) for u, v in zip(first, last))

        def values(points):
            logits = tail(*points)  # (points, batch, classes)
            return jax.vmap(lambda z: jnp.take_along_axis(z, target[:, None], axis=1)[:, 0])(
                logits)

        return tuple(sum_leading(widen(g) * w.reshape((-1,) + (1,) * (g.ndim - 1)))
                     for g in selected_gradient(values, points))

    def chunk(items):
        a, w = items
        big = _folded_stem(f, stem, start, a.shape[0])
        return vmapped(a, w) if big is None else folded(a, w, big)

    cotangent = chunked_reduce(chunk, (alphas, weights), batch_size)
    narrow = tuple(c.astype(u.dtype) for c, u in zip(cotangent, first))
    return widen(jax.vjp(stem.head, start)[1](narrow)[0])


def chunked_map(fn: Callable, xs: Any, batch_size: int | None) -> Any:
    """``stack([fn(x) for x in xs])`` evaluating `batch_size` items at a time (None:
    :func:`jaxplain.core._chunks.auto_chunk`): the whole chunks in ``lax.map`` of
    :func:`loop_body`, the last, smaller one after it."""
    m = jax.tree_util.tree_leaves(xs)[0].shape[0]
    c = auto_chunk(batch_size, fn, xs, per_item=True)
    if batch_size is None and c == m:
        return jax.vmap(fn)(xs)
    full, rest = divmod(m, c)
    head = jax.tree_util.tree_map(lambda a: a[:full * c], xs)
    out = jax.lax.map(loop_body(fn, full), head, batch_size=c)
    if not rest:
        return out
    tail = jax.vmap(fast_convolutions(fn))(jax.tree_util.tree_map(lambda a: a[full * c:], xs))
    return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), out, tail)


def group_mask(feature_mask: Any, x: jax.Array,
               name: str = "feature_mask") -> tuple[np.ndarray, int]:
    """A feature mask relabelled to groups 0..G-1 (a NumPy int32 array), and G.

    `feature_mask` holds integer group ids with one example's shape (or broadcastable to it),
    shared by the batch; or, with as many axes as `x`, one mask per example (batch axis of
    size ``n`` or 1; variable-length sequences). Groups are numbered over the whole mask, so an
    example may lack some. The result has one example's shape, or ``x``'s for a mask per
    example. None makes every element of an example its own group.
    """
    example = tuple(x.shape[1:])
    if feature_mask is None:
        size = int(np.prod(example, dtype=np.int64))
        return np.arange(size, dtype=np.int32).reshape(example), size
    if is_traced(feature_mask):
        raise TypeError(f"{name} must be a concrete array (its groups decide the number of "
                        "evaluations); got a traced value. Pass it from outside jit.")
    m = np.asarray(feature_mask)
    if not np.issubdtype(m.dtype, np.integer):
        raise TypeError(f"{name} must hold integer group ids; got dtype {m.dtype}")
    target = tuple(x.shape) if m.ndim == x.ndim else example
    try:
        shape = np.broadcast_shapes(m.shape, target)
    except ValueError:
        shape = None
    if shape != target:
        raise ValueError(f"{name} must have one example's shape {example} (or broadcast to it), "
                         f"or x's {tuple(x.shape)} for one mask per example (batch axis n or 1); "
                         f"got shape {m.shape}")
    ids, relabelled = np.unique(m, return_inverse=True)
    relabelled = np.broadcast_to(relabelled.reshape(m.shape).astype(np.int32), target)
    return np.ascontiguousarray(relabelled), int(ids.size)


def spread(values: jax.Array, mask: jax.Array, x: jax.Array) -> jax.Array:
    """Per-group values ``(G, n)`` given to the members of each group, shaped like `x`, for a
    `mask` of :func:`group_mask` (one example's shape, or `x`'s: one mask per example)."""
    if mask.ndim == x.ndim:
        rows = jnp.arange(x.shape[0]).reshape((-1,) + (1,) * (x.ndim - 1))
        return values.T[rows, mask]
    return jnp.moveaxis(values[mask], -1, 0)
