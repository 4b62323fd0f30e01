"""Argument checks and site resolution shared by the pathway functions.

Everything here runs on the host before tracing: the selected sites (names and shapes for the
batch being explained), the number of classes, and the range of ``keep`` and ``target``.
Resolution traces ``f`` once per (function, input shape, selector) through the kernel (so a
model that fails at ``x``'s shape raises the kernel's "could not be evaluated" ``ValueError``)
and is cached, so repeated direct calls do not re-trace the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import core
from jaxplain.attribution import _common
from jaxplain.core._backward import unruled_products
from jaxplain.core._capture import RELU_LIKE, batch_lost_at, program_of, selector_key
from jaxplain.core._function_cache import per_function
from jaxplain.core._user_line import user_stacklevel
from jaxplain.core._sites import NORMALIZERS

#: The default sites' activations (:data:`jaxplain.core._capture.RELU_LIKE`).
PIECEWISE_LINEAR = RELU_LIKE


def check_function(f: Callable) -> None:
    """The check every method shares (``jaxplain.attribution``): ``f`` is a hashable model
    function, not a model object; a Flax or Equinox module is refused with the way to wrap it
    (``jaxplain.as_function``)."""
    _common.check_function(f)


def check_x(x):
    """``x`` as a floating array with a batch axis first; rejects NaN or inf when concrete.

    Array-likes (lists, NumPy arrays) are accepted; a tracer (inside the user's ``jit`` or
    ``vmap``) passes with its shape and dtype checked only.
    """
    if not hasattr(x, "dtype"):
        try:
            x = jnp.asarray(np.asarray(x))
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"x must be an array (a batch of inputs, batch axis first); got "
                f"{type(x).__name__}, which is not array-like: {err}"
            ) from err
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"x must be a floating-point array (the model is differentiated with respect to it); "
            f"got dtype {x.dtype}. Convert it with x.astype(jnp.float32)."
        )
    shape = tuple(np.shape(x))
    if len(shape) < 2:
        raise ValueError(
            f"x must be a batch with the batch axis first (e.g. NHWC images); got shape {shape}. "
            "Add a batch axis with x[None]."
        )
    if shape[0] == 0:
        raise ValueError(f"x must hold at least one example; got an empty batch of shape {shape} "
                         "(x[y == c] for a class c with no examples?)")
    if not isinstance(x, jax.core.Tracer):
        if isinstance(x, np.ndarray):
            finite = bool(np.isfinite(x).all())
        else:
            with jax.ensure_compile_time_eval():  # a closed-over array inside the user's jit
                finite = bool(jnp.isfinite(x).all())
        if not finite:
            bad = np.argwhere(~np.isfinite(np.asarray(x)).reshape(shape[0], -1).all(axis=1)).ravel()
            raise ValueError(
                f"x contains NaN or infinite values (examples {bad[:10].tolist()}"
                f"{' ...' if len(bad) > 10 else ''} of {shape[0]}); the model's logits there are "
                "not finite and no pathway can be scored. Clean or drop those inputs."
            )
    return x


def check_positive_int(value, name: str) -> int:
    """``value`` (a count such as ``steps``) checked to be an int >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}.")
    return value


def check_keep(keep) -> float:
    """Return ``keep`` as a Python float after checking it lies in (0, 1]."""
    if isinstance(keep, bool) or not isinstance(keep, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"keep must be a Python float in (0, 1] (the kept fraction of units, e.g. 0.2 for "
            f"the paper's 80th percentile); got {type(keep).__name__} {keep!r}."
        )
    keep = float(keep)
    if not 0.0 < keep <= 1.0:
        raise ValueError(
            f"keep must lie in (0, 1] (the kept fraction of units; 0.2 keeps units above the "
            f"80th percentile, 1 keeps every unit); got {keep}."
        )
    return keep


@per_function(maxsize_fallback=256)
def _resolve(f: Callable, shape: tuple, dtype, selector) -> tuple[tuple, int]:
    spec = jax.ShapeDtypeStruct(shape, dtype)
    all_sites = core.sites(f, spec)  # first: the kernel wraps a model that fails at this shape
    out = jax.eval_shape(f, spec)
    if len(out.shape) != 2 or out.shape[0] != shape[0]:
        raise ValueError(
            f"f must map a batch of shape {shape} to logits of shape (batch, classes); "
            f"got output shape {out.shape}."
        )
    if selector is None:
        names = tuple(s.name for s in all_sites
                      if s.kind == "activation" and s.op in PIECEWISE_LINEAR)
        if not names:
            raise ValueError(
                f"f has no post-ReLU activation sites (nor any of {', '.join(PIECEWISE_LINEAR)}, "
                "the piecewise-linear activations); pass sites= explicitly (a name, glob, list "
                f"or predicate). Available sites: {[s.name for s in all_sites]}."
            )
        _warn_if_not_piecewise_linear(f, spec, all_sites)
    else:
        names = tuple(core.select(all_sites, selector))
        if not names:
            raise ValueError(
                f"sites={selector!r} selects no site of f. Available sites: "
                f"{[s.name for s in all_sites]}."
            )
    by_name = {s.name: s for s in all_sites}
    for n in names:
        check_batch_first(f, spec, n, tuple(by_name[n].shape))
    return tuple((n, tuple(by_name[n].shape), by_name[n].dtype) for n in names), out.shape[1]


def _warn_if_not_piecewise_linear(f: Callable, spec, all_sites) -> None:
    """A ``UserWarning`` when `f` also computes smooth nonlinearities that the default sites
    leave unmasked (a sigmoid gate, a GELU, a product of two input-dependent values, a
    normaliser's scale): the masked network is then not locally linear around x."""
    smooth = [s.name for s in all_sites if s.kind == "activation" and s.op not in PIECEWISE_LINEAR]
    smooth += list(unruled_products(f, spec, ()))
    program, _ = program_of(f, spec, unrolled=True)
    if any(node.prim in NORMALIZERS and any(r in program.depends for r in node.ins)
           for node in program.nodes):
        smooth.append("a normaliser's scale (sqrt/rsqrt)")
    if smooth:
        shown = ", ".join(smooth[:4]) + (", ..." if len(smooth) > 4 else "")
        warnings.warn(
            f"pathways: f also computes nonlinearities that are not piecewise linear ({shown}); "
            "the network masked at its piecewise-linear activations is then not locally linear "
            "around x, so the pathway gradient is a gradient of a smooth function, not of an "
            "affine one (docs/pathways.md, 'Non-ReLU networks').",
            UserWarning, stacklevel=user_stacklevel())


def check_batch_first(f: Callable, spec, name: str, site_shape: tuple) -> None:
    """Refuse a site whose value does not hold the batch first, as the kernel presents every
    value whose batch axis it follows from ``x`` (`spec`): one percentile per example, and one
    mask row per example, need it."""
    batch = spec.shape[0]
    if site_shape[:1] != (batch,):
        cause, fix = batch_lost_at(f, spec, name)
        raise ValueError(
            f"site {name!r} has shape {site_shape}, whose first axis is not the batch of {batch}: "
            f"the kernel lost the batch axis of its value on the way from x (after {cause}), so "
            f"the pathway cannot be selected per example. {fix[0].upper()}{fix[1:]}; or pass "
            "sites= without it.")


def resolve(f: Callable, x, sites) -> tuple[tuple, int]:
    """Return ``(((name, shape, dtype), ...), n_classes)`` for the sites selected in ``f``.

    Args:
      f: the model function, batch in, logits ``(batch, classes)`` out.
      x: the input batch, already through :func:`check_x` (only its shape and dtype are used).
      sites: ``None`` (every activation site of :data:`PIECEWISE_LINEAR`: relu, relu6,
        leaky_relu, hard_tanh) or any selector accepted by ``jaxplain.core.select`` (a name, a
        glob, a list of names, a predicate).
    """
    check_function(f)
    shape = tuple(np.shape(x))
    try:
        key = None if sites is None else selector_key(sites)
        hash(key)
    except TypeError:
        raise TypeError(
            f"sites must be None, a name, a glob, a list/tuple of names or a predicate; "
            f"got {type(sites).__name__}."
        ) from None
    return _resolve(f, shape, jnp.dtype(x.dtype), key)


def in_order(tree: dict, names) -> dict:
    """`tree` with its keys in the order of `names` (a compiled function returns a dict sorted
    by key: ``blk/0/relu`` before ``relu``, whatever the network's order)."""
    return {name: tree[name] for name in names}


def check_target(target, batch: int, n_classes: int):
    """Check a concrete ``target`` (int or ``(batch,)`` ints) against the class count.

    Returns it as an int32 ``(batch,)`` array, so that an int and an array of targets reach the
    compiled function as the same type and compile once (as ``jaxplain.attribution`` does).
    ``None`` (the predicted class) and traced targets pass through unchecked; a function is
    refused with the message of ``jaxplain.attribution``.
    """
    if target is None:
        return None
    if callable(target):
        raise _common.callable_target_error(after=" For the predicted class pass target=None.")
    try:
        t = np.asarray(target)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return target
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"target must be an int or an int array of shape ({batch},); got dtype {t.dtype}.")
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != batch):
        raise ValueError(f"target must be a scalar int or have shape ({batch},); got shape {t.shape}.")
    if t.size and (t.min() < 0 or t.max() >= n_classes):
        raise ValueError(
            f"target out of range: f has {n_classes} classes, so targets must lie in "
            f"[0, {n_classes - 1}]; got {t.tolist()}."
        )
    if (isinstance(target, jax.Array) and target.dtype == jnp.int32 and target.shape == (batch,)
            and not target.weak_type):  # jnp.full(n, 3) is weakly typed: another compile
        return target  # already on the device as it should be: no copy
    return jnp.asarray(np.broadcast_to(t.astype(np.int32), (batch,)))


def targets(f: Callable, x, target):
    """Inside a trace: ``target`` as an int32 ``(batch,)`` array (``None``: predicted class)."""
    if target is None:
        return jnp.argmax(jax.lax.stop_gradient(f(x)), axis=-1).astype(jnp.int32)
    return jnp.broadcast_to(jnp.asarray(target, jnp.int32), (x.shape[0],))


def check_masks(masks) -> Mapping:
    if not isinstance(masks, Mapping) or not masks:
        raise TypeError(
            f"masks must be a non-empty dict {{site name: mask shaped like the site's value}}, "
            f"as returned by jaxplain.pathways.select; got {type(masks).__name__}."
        )
    return masks
