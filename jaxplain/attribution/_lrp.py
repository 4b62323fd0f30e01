"""Layer-wise relevance propagation as the gradient of a rewritten function."""

from __future__ import annotations

import fnmatch
import functools
import warnings
from collections.abc import Callable
from typing import Any

import jax
from jaxtyping import Array, ArrayLike, Float, Int

from jaxplain.attribution import _common, _model_checks
from jaxplain.attribution._lrp_rules import as_composite
from jaxplain.core import rewrite_backward
from jaxplain.core._backward import (_dependent_position, _input_views, folded_scopes,
                                     linear_layer_names, unfolded_scales)
from jaxplain.core._capture import program_of
from jaxplain.core._select import unknown_site_error
from jaxplain.core._cpu import cpu_friendly
from jaxplain.core._reinterpret import match_varying


@functools.partial(jax.jit, static_argnames=("f", "rules", "scale"))
def _lrp(f, x, target, *, rules, scale):
    y, pullback = jax.vjp(cpu_friendly(rewrite_backward(f, rules)), x)  # pools: fast CPU forms
    relevance = jax.nn.one_hot(target, y.shape[1], dtype=y.dtype)
    relevance = match_varying([y, relevance])[0][1]  # in a shard_map: per device, as y is
    if scale:
        relevance = relevance * y
    return pullback(relevance)[0]


def _check_selectors(f: Callable, x: jax.Array, composite) -> None:
    """ValueError, with close matches, for a layer name or glob of `composite` that names no
    linear layer of `f` (a typo would leave its layers to the default rule, silently)."""
    selectors = composite.selectors()
    if not selectors:
        return
    layers = linear_layer_names(f, x)
    for selector in selectors:
        if any(fnmatch.fnmatchcase(name, selector) for name in layers):
            continue
        into = {scope: layer for scope, layer in folded_scopes(f, x).items()
                if fnmatch.fnmatchcase(scope, selector)}
        if into:
            raise ValueError(
                f"{selector!r} in rules is folded into the linear layer "
                f"{', '.join(repr(v) for v in dict.fromkeys(into.values()))} (a BatchNorm or "
                f"other per-channel affine op after a layer becomes part of its weight and "
                f"bias, and the layer's rule applies to both): name that layer instead.")
        raise unknown_site_error(selector, layers, what="linear layer (in rules)")


def _warn_if_shared_layer_scaled(f: Callable, x: jax.Array, composite) -> None:
    """UserWarning when a per-channel scale (a BatchNorm) reads a linear layer's output that
    another op reads too (a pre-activation block's skip), so that it is not folded into the
    layer, and `composite` takes its plain gradient there (``scales="gradient"``)."""
    if composite.scales == "pass":
        return
    shared = [(name, layer) for name, layer in unfolded_scales(f, x) if layer is not None]
    if shared:
        name, layer = shared[0]
        warnings.warn(
            f"lrp: the per-channel scale {name!r} (a BatchNorm) reads the output of the linear "
            f"layer {layer!r}, which another op reads too, so it is not folded into that layer "
            f"and its plain gradient multiplies the relevance by its scale: relevance is not "
            f"conserved there. Composite(..., scales='pass') passes relevance through it "
            f"unchanged (Zennit's Pass rule, as the presets do).", UserWarning, stacklevel=3)


def _warn_if_unruled_nonlinear(f: Callable, x: jax.Array) -> None:
    """UserWarning when `f` applies elementwise nonlinearities that are none of the activations
    the rules see (``jnp.abs``, ``x ** 2``, ``jnp.clip``), whose plain gradient lrp takes."""
    names = _model_checks.unruled_nonlinear(f, x, routes=False)
    if names:
        shown = ", ".join(repr(n) for n in names[:4]) + (", ..." if len(names) > 4 else "")
        warnings.warn(
            f"lrp: the model applies elementwise nonlinearities that are none of the "
            f"activations jaxplain has rules for ({shown}) to values that depend on x; lrp "
            f"passes their plain gradient, not their relevance, so relevance is not conserved "
            f"there. Write the nonlinearity as a jax.nn function where it is one "
            f"(jax.nn.hard_tanh for jnp.clip(h, -1, 1), jax.nn.relu6, jax.nn.softplus, ...), "
            f"which the activation rule passes.", UserWarning, stacklevel=3)


def _warn_if_first_applies_nowhere(f: Callable, x: jax.Array, composite) -> None:
    """UserWarning when `composite` sets `first` but no linear layer of `f` reads the input
    (through layout ops and affine maps by constants, see `_input_views`): the input reaches the
    first weights through other ops (a gather and ``segment_sum``, a sum, a product), and
    `first` would be dropped silently."""
    if composite.first is None:
        return
    program, site_map = program_of(f, x, unrolled=True)
    inputs = _input_views(program)
    if any(program.nodes[i].ins[_dependent_position(program, program.nodes[i])] in inputs
           for i in site_map.groups if i not in site_map.pools):
        return
    warnings.warn(
        f"lrp: the rules set first={composite.first!r}, but no linear layer reads the input "
        f"directly (it reaches the first weights through other ops, e.g. a gather and "
        f"segment_sum), so that rule applies nowhere; to give a layer that rule, name it: "
        f"Composite(layers=((name, rule),), ...), with a name of "
        f"{list(linear_layer_names(f, x))}.", UserWarning, stacklevel=3)


def lrp(f: Callable, x: Float[ArrayLike, "batch *feature"],
        target: Int[ArrayLike, "batch"] | Int[ArrayLike, ""], *, rules: Any,
        scale_by_logit: bool = False) -> Float[Array, "batch *feature"]:
    """Layer-wise relevance propagation with Zennit's rules.

    The relevance of the output is the one-hot of the target (times the target logit with
    `scale_by_logit`). It flows back through every linear layer (dense or convolution, with
    BatchNorm and other per-channel affine ops folded in) by that layer's rule, through
    residual additions, average pools and other sums of several input-dependent terms (over
    any axes but the batch, ``segment_sum``, ``cumsum``) in proportion to their inputs
    (Zennit's Norm rule),
    through activations unchanged (Zennit's Pass rule; ``Composite(activations="gradient")``
    multiplies by the derivative instead), so that it is conserved, and through max pools and
    reshapes by their plain gradient (a max pool sends a window's relevance to its maximum).
    Zennit's rules have none for LayerNorm: through one, relevance is not conserved; for
    transformers use :func:`jaxplain.attribution.conservative_propagation`. A BatchNorm that
    no layer folds (after an activation, a pool or a residual sum, on the input, or reading a
    layer's output that another op reads too) takes its plain gradient, or passes relevance on
    unchanged with ``Composite(scales="pass")``, as the presets do (Zennit's presets put Pass
    on every BatchNorm). A ``first`` rule that applies to no layer (no linear layer reads the
    input directly), an elementwise nonlinearity that is no activation the rules know
    (``jnp.abs``, ``jnp.clip``), and a BatchNorm on a shared layer output whose gradient the
    rules take warn.

    Args:
      f: the model, mapping a batch to logits ``(n, classes)``; any JAX function (a Flax or
        Equinox model through :func:`jaxplain.as_function`). Pass the logits: relevance
        started at a final ``jax.nn.softmax`` is not conserved (a ``UserWarning`` says so).
      x: the inputs, batch first (images NHWC).
      target: the class to explain per example, shape ``(n,)``, or one int.
      rules: one rule for every linear layer (``Epsilon()``, ``ZPlus()``, ``AlphaBeta(2, 1)``,
        ``ZBox(0, 1)``, ``Flat()``, ``WSquare()``, ``Gamma()``), a
        :class:`~jaxplain.lrp.Composite` (e.g. ``EpsilonPlusFlat()``), or ``(selector, rule)``
        pairs matched against layer names. Rules are hashable values: equal rules reuse the
        compiled function. A single rule is ``Composite(default=rule)``: average pools and
        residual additions keep the Composite's own stabiliser (1e-6, as Zennit's Norm rule),
        whatever the rule's epsilon; for exact conservation in float64 pass
        ``Composite(default=Epsilon(0.0), stabilizer=0.0)``. ``Epsilon(0.0)`` (LRP-0) gives
        a unit whose pre-activation is exactly 0 no relevance.
      scale_by_logit: start from ``onehot * f(x)`` instead of the one-hot.

    Returns:
      The input relevance, shaped like `x`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxplain.attribution import lrp
      >>> from jaxplain.lrp import Epsilon
      >>> f = lambda x: x @ jnp.array([[1.0], [3.0]])
      >>> lrp(f, jnp.array([[2.0, 2.0]]), 0, rules=Epsilon(0.0))   # shares of f = 2 + 6
      Array([[0.25, 0.75]], dtype=float32)

    References:
      Bach et al. On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise
      Relevance Propagation. PLoS ONE 2015. Anders et al. Software for Dataset-wide XAI: From
      Local Explanations to Global Insights with Zennit, CoRelAy, and ViRelAy. 2021.
    """
    x, t = _common.check_arguments(f, x, target)
    composite = as_composite(rules)
    try:
        hash(composite)
    except TypeError as err:
        raise TypeError(f"rules must be hashable values (frozen dataclasses); got {rules!r}") from err
    _check_selectors(f, x, composite)
    _warn_if_first_applies_nowhere(f, x, composite)
    _model_checks.warn_if_softmax_output(f, x, "lrp", "relevance is not conserved (the one-hot "
                                   "relevance through a softmax's gradient sums to about 0)")
    _model_checks.warn_if_products(f, x, composite, "lrp", "relevance is not conserved")
    _warn_if_unruled_nonlinear(f, x)
    _warn_if_shared_layer_scaled(f, x, composite)
    return _lrp(f, x, t, rules=composite, scale=bool(scale_by_logit))
