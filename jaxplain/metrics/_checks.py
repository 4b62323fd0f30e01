"""Input checks shared by the metrics: raised before tracing, naming the argument.

Value checks (NaN, inf, target range) run whenever the value is concrete, also inside a user's
``jax.jit`` when the array is closed over rather than an argument (a closed-over array is
concrete; the checks evaluate under :func:`jax.ensure_compile_time_eval`). Tracers are not
checked. Each ``check_*`` reads its value at once; its ``as_*`` twin returns the
:class:`~jaxplain.attribution._value_checks.Check` instead, so that a caller runs several with one
read-back (:func:`run_checks`: one wait for an accelerator), and an array found fine is not
read again.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.attribution._common import callable_target_error, check_function, output_shape
from jaxplain.attribution._value_checks import Check, run_checks


def finite_check(a: Any, name: str) -> Check:
    """:func:`check_finite` of ``a`` as a :class:`Check`, to run with others."""
    def error(bad):
        shown = bad[:8].tolist() + (["..."] if bad.size > 8 else [])
        return ValueError(f"{name} contains NaN or inf (examples {shown} of {a.shape[0]}): "
                          "scores of such a map mean nothing; fix the method that made it")
    return Check("finite", a, error)


def check_finite(a: jax.Array, name: str) -> None:
    """A ``ValueError`` naming the examples when a concrete ``a`` ``(batch, ...)`` holds NaN
    or inf (an infinite map gives NaN scores: Gini, entropy and rankings of inf mean nothing)."""
    run_checks(finite_check(a, name))


def is_concrete(a: Any) -> bool:
    """True when ``a`` holds values (not a tracer inside a user's ``jit``/``vmap``)."""
    return not isinstance(a, jax.core.Tracer)


def check_nonempty(a: jax.Array, name: str) -> None:
    """A ``ValueError`` naming `name` when ``a`` ``(batch, ...)`` holds no example (the same
    message as the pathways' check of ``x``)."""
    if a.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one example; got an empty batch of shape "
                         f"{tuple(a.shape)} (x[y == c] for a class c with no examples?)")


def as_batch(x: Any, name: str = "x") -> tuple[jax.Array, Check]:
    """:func:`check_batch` with its NaN check returned, not run."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array with a batch axis first, got {type(x).__name__}")
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have a batch axis and at least one feature axis, got shape {x.shape}; "
            f"add a batch axis with {name}[None]"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating array, got dtype {x.dtype}")
    check_nonempty(x, name)
    return x, Check("nan", x, lambda bad: ValueError(f"{name} contains NaN"))


def check_batch(x: Any, name: str = "x") -> jax.Array:
    """``x`` as a floating array with a batch axis first, at least one example; rejects NaN
    when concrete."""
    x, check = as_batch(x, name)
    run_checks(check)
    return x


def as_like(a: Any, x: jax.Array, name: str, *,
            broadcast: bool = False) -> tuple[jax.Array, Check]:
    """:func:`check_like` with its finite check returned, not run."""
    if not hasattr(a, "shape"):
        raise TypeError(f"{name} must be an array shaped like x {x.shape}, got {type(a).__name__}")
    a = jnp.asarray(a)
    fits = a.shape == x.shape or (
        broadcast and a.ndim == x.ndim and a.shape[0] == x.shape[0]
        and all(m in (1, n) for m, n in zip(a.shape[1:], x.shape[1:])))
    if not fits:
        also = (", or that shape with axes of size 1 (e.g. summed over the channel axis with "
                "keepdims=True)" if broadcast else "")
        raise ValueError(f"{name} must have the shape of x {x.shape}{also}, got {a.shape}")
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(x.dtype)
    return a, finite_check(a, name)


def check_like(a: Any, x: jax.Array, name: str, *, broadcast: bool = False) -> jax.Array:
    """``a`` as a finite floating array with exactly ``x``'s shape; with ``broadcast``, also
    one of ``x``'s rank and batch size whose other axes are ``x``'s or 1 (a channel-summed
    map ``(n, H, W, 1)``), returned as given."""
    a, check = as_like(a, x, name, broadcast=broadcast)
    run_checks(check)
    return a


def as_target(target: Any, batch: int, classes: int | None = None) -> tuple[jax.Array, Check]:
    """:func:`check_target` with its range check returned, not run."""
    if target is None:
        raise ValueError(f"target is required: an int class index per example, shape ({batch},), "
                         "or a scalar (for example the predicted classes, f(x).argmax(-1))")
    if callable(target):
        raise callable_target_error()
    t = target if isinstance(target, jax.Array) else np.asarray(target)  # a list: on the host
    if not jnp.issubdtype(t.dtype, jnp.integer):
        raise TypeError("target must be an int scalar or an int array (batch,), got dtype "
                        f"{jax.dtypes.canonicalize_dtype(t.dtype)}")
    if t.ndim not in (0, 1) or (t.ndim == 1 and t.shape != (batch,)):
        raise ValueError(f"target must be a scalar or have shape ({batch},), got {t.shape}")
    out = jnp.broadcast_to(jnp.asarray(t), (batch,)).astype(jnp.int32)

    def error(found):
        return ValueError(f"target must lie in [0, {classes}) (f returns {classes} logits), "
                          f"got values in [{found[0]}, {found[1]}]")
    return out, (None if classes is None else Check("range", t, error, classes, alias=out))


def check_target(target: Any, batch: int, classes: int | None = None) -> jax.Array:
    """``target`` as an int32 ``(batch,)`` array; a scalar broadcasts; range checked if known."""
    target, check = as_target(target, batch, classes)
    run_checks(check)
    return target


def checked(f: Any, x: Any, target: Any, attribution: Any = None, *,
            broadcast: bool = False) -> tuple[jax.Array, Any, jax.Array]:
    """``(x, attribution, target)`` checked as :func:`check_batch`, :func:`check_like` (when
    `attribution` is given; None passes through) and :func:`check_target` against ``f``'s
    class count, with one read-back: the first failing check raises, in that order."""
    x, x_check = as_batch(x)
    a_check = None
    if attribution is not None:
        attribution, a_check = as_like(attribution, x, "attribution", broadcast=broadcast)
    target, t_check = as_target(target, x.shape[0], num_classes(f, x))
    run_checks(x_check, a_check, t_check)
    return x, attribution, target


def num_classes(f: Any, x: jax.Array) -> int:
    """The number of logits ``f`` returns, from its abstract evaluation (no FLOPs).

    ``f`` is checked first as every method checks it
    (:func:`jaxplain.attribution._common.check_function`: a Flax or Equinox module is refused
    with the way to wrap it), and a model that fails on ``x`` says so, with ``x[None]`` where
    ``x`` is one example without its batch axis. Cached per ``(f, shape, dtype)`` like
    ``jit``'s own cache (``f`` is a static argument of every metric anyway), so repeated calls
    do not trace ``f`` again.
    """
    check_function(f)
    out = output_shape(f, x)
    if len(out) != 2 or out[0] != x.shape[0]:
        raise ValueError(f"f must map x {tuple(x.shape)} to logits (batch, classes), got {out}")
    return int(out[1])


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a ``ValueError`` listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` if it is an int ``>= minimum`` (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_batch_size(batch_size: Any) -> int | None:
    """``None`` (automatic: :func:`jaxplain.core._chunks.auto_chunk`) or a positive int."""
    if batch_size is None:
        return None
    return check_positive_int(batch_size, "batch_size")


def check_fractions(fractions: Any, name: str = "fractions") -> tuple[float, ...]:
    """A non-empty tuple of floats in ``[0, 1]``."""
    try:
        values = tuple(float(q) for q in np.atleast_1d(np.asarray(fractions, dtype=float)))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of floats in [0, 1], got {fractions!r}") from None
    if not values or any(not 0.0 <= q <= 1.0 for q in values):
        raise ValueError(f"{name} must be a non-empty sequence of floats in [0, 1], got {fractions!r}")
    return values


def check_method(method: Any, name: str = "method") -> Any:
    """``method`` if callable as ``method(f, x, target)``."""
    if not callable(method):
        raise TypeError(f"{name} must be callable as {name}(f, x, target) -> attribution, got {method!r}")
    return method


_WRAP = ("data.Digits(x_train=..., y_train=..., x_test=..., y_test=...) (jaxplain.data.Digits: "
         "arrays (n, *feature) and int labels (n,))")


def check_digits(digits: Any) -> Any:
    """``digits`` if it holds ``x_train``, ``y_train``, ``x_test``, ``y_test`` arrays."""
    fields = ("x_train", "y_train", "x_test", "y_test")
    if not all(hasattr(getattr(digits, k, None), "shape") for k in fields):
        raise TypeError(f"digits must be your training data wrapped as {_WRAP}, "
                        f"got {type(digits).__name__}")
    return digits


def check_digits_fit(digits: Any, defaulted: bool, caller: str, *,
                     feature_shape: tuple[int, ...] | None = None,
                     f: Any = None, classes: int | None = None) -> None:
    """Refuses, up front, data that the model cannot be trained on or cannot read.

    ``feature_shape``: the model's input shape without the batch axis (the shape of ``x``);
    ``f``: a function that must accept ``digits.x_train`` (abstractly evaluated, no FLOPs);
    ``classes``: the model's number of logits, which must exceed every label.
    """
    data_shape = tuple(digits.x_train.shape[1:])
    source = ("the embedded 8x8 digits (the default of digits=)" if defaulted else
              "the digits= data")
    fix = (f"Pass the data your model was trained on as digits={_WRAP}." if defaulted else
           "Pass data whose images have the model's input shape and labels below its number "
           "of classes.")
    problem = None
    if feature_shape is not None and tuple(feature_shape) != data_shape:
        problem = (f"the model reads inputs shaped {tuple(feature_shape)} (x without its batch "
                   f"axis) but the images of {source} are shaped {data_shape}")
    elif f is not None:
        try:
            jax.eval_shape(f, jax.ShapeDtypeStruct((1,) + data_shape, digits.x_train.dtype))
        except Exception as e:  # noqa: BLE001 - any failure means f cannot read these images
            problem = (f"f cannot read the images of {source}, shaped {data_shape} "
                       f"({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    if problem is None and classes is not None and is_concrete(digits.y_train):
        top = int(np.asarray(digits.y_train).max())
        if top >= classes:
            problem = (f"the model returns {classes} logits but the labels of {source} go up "
                       f"to {top}")
    if problem is not None:
        raise ValueError(f"{caller}: {problem}. {fix}")
