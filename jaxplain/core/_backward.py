"""rewrite_backward: the same forward values, a VJP that follows per-layer rules.

LRP, AttnLRP, DeepLIFT, guided backprop and deconvnet are rules over these places in a traced
program:

* linear layers: a dot_general or convolution with one input-dependent operand and constant
  weights, together with the elementwise affine-by-constant ops that follow it and act per
  output channel (bias add, BatchNorm in inference mode, a LayerScale), folded into one
  effective weight and bias; the ops after the first that does not (a positional table, a
  padding mask) are no part of the layer and take the plain gradient;
* activations (relu in all its spellings, tanh, sigmoid, ...);
* pools (max pooling; average pooling with its division by the window size; a mean over the
  axes between the batch and the last, e.g. global average pooling; a max over the channels,
  as maxout units take, or a min over any axes but the batch);
* sums of several input-dependent terms that are no pool: a ``reduce_sum`` over other axes
  than the batch (a region of a class map, the features), a scatter-add of input-dependent
  updates (``segment_sum``), a ``cumsum``; neither these nor a mean when it is a statistic of a
  normalisation (a LayerNorm's mean or variance, a softmax's total);
* residual adds of two input-dependent values;
* normalisers: a square root or reciprocal square root of an input-dependent value (the scale
  of a LayerNorm or RMSNorm);
* per-channel scales by constants that fold into no linear layer (a BatchNorm after an
  activation, a pool or a residual sum, or on the input; one after a layer whose output
  another op reads too);
* products of two input-dependent values (``mul``, and ``matmul`` for a dot_general: attention's
  ``q k^T`` and ``p v``, gated units), when neither depends on the input only through a
  normaliser (so a LayerNorm's ``(x - mean) * scale`` is no product).

Each such place runs under a ``jax.custom_vjp`` whose backward asks the rule; a rule that has no
method for the place, or returns ``None``, gets the plain gradient.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import inspect
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.core._batch import batch_axes
from jaxplain.core._capture import compiled, program_of, selector_key
from jaxplain.core._channels import channel_axes, fixed_values, resamples
from jaxplain.core._cpu import cpu_friendly
from jaxplain.core._opaque import OPAQUE_TEXT, opaque_nodes, warn_opaque
from jaxplain.core._pools import first_max
from jaxplain.core._program import Lit, Node, Program, gradient_gate, run
from jaxplain.core._select import matches, unknown_site_error
from jaxplain.core._sites import (NORMALIZERS, PRODUCTS, SUMS, Site, SiteMap, _affine_step,
                                  _consumers, order_preserving)

# The methods a rule may define, one per kind of place (see rewrite_backward).
RULE_METHODS = ("linear", "activation", "pool", "sum", "add", "normalizer", "product", "scale")


@dataclasses.dataclass(frozen=True)
class LinearLayer:
    """A linear layer as a rule sees it.

    Attributes:
      name: the layer's site name (e.g. ``"conv1"``, ``"block1/conv_a"``, ``"linear_1"``).
      op: ``"dense"`` or ``"conv"``.
      weight: the effective weight (following per-channel affine ops such as BatchNorm folded in).
      bias: the effective bias, broadcastable to the layer's output (zeros when there is none).
      apply: ``apply(x, w)`` computes the linear map without bias, for any weight `w` shaped like
        `weight` (rules call it with modified weights, e.g. their positive part).
      is_input: True when the layer consumes the model's input (directly, or through layout
        ops such as reshapes, ``jnp.repeat``, ``jnp.pad`` and a concatenated constant channel,
        and elementwise affine maps with constants: an input normalisation).
      in_axis: the axis of its input that holds the features it reads (a convolution's input
        channels, 1 for NCHW; a dense layer's contracted axis), or None when there are several.
      batch_axis: the axis of its input that holds the examples (a convolution's batch
        dimension; a dense layer's first axis unless it is contracted), or None when unknown.
    """

    name: str
    op: str
    weight: Any
    bias: Any
    apply: Callable
    is_input: bool
    in_axis: int | None = None
    batch_axis: int | None = None

    def __call__(self, x):
        return self.apply(x, self.weight) + self.bias


def _pick(rules, site: Site, method: str):
    """The rule for `method` at `site`: the one rule if it has `method`, else that of the first
    ``(selector, rule)`` pair whose selector picks `site` and whose rule has `method` (a pair
    whose rule lacks it is passed over); None: the plain gradient."""
    if not isinstance(rules, tuple):
        return rules if hasattr(rules, method) else None
    return next((rule for selector, rule in rules
                 if hasattr(rule, method) and matches(selector, site)), None)


def _ask(rule, method: str, name: str, args: tuple, like: tuple):
    """``rule.<method>(*args)`` at the place `name`: None, or cotangents shaped as the inputs
    `like` (one; two for ``add`` and ``product``). A rule that fails, or answers in other
    shapes, raises an error naming the place, the rule and the method."""
    where = f"rewrite_backward: {type(rule).__name__}.{method} at the place {name!r}"
    try:
        out = getattr(rule, method)(*args)
    except Exception as err:  # noqa: BLE001 - re-raised with the place and the rule
        kind = TypeError if isinstance(err, TypeError) else ValueError
        raise kind(f"{where} failed: {type(err).__name__}: {err}") from err
    if out is None:
        return None
    outs = (out,) if len(like) == 1 else out
    if not (isinstance(outs, (tuple, list)) and len(outs) == len(like)):
        got = f"an array of shape {out.shape}" if hasattr(out, "shape") else type(out).__name__
        raise TypeError(f"{where} returned {got}; it returns a pair (cotangent of a, cotangent "
                        f"of b), or None for the plain gradient")
    for got, want in zip(outs, like):
        if jnp.shape(got) != jnp.shape(want):
            raise ValueError(
                f"{where} returned a cotangent of shape {jnp.shape(got)} for an input of shape "
                f"{jnp.shape(want)}: a rule returns values shaped like its inputs (batch "
                f"first, as it received them), or None for the plain gradient")
    return out


def _dependent_position(program: Program, node: Node) -> int:
    return next(k for k, r in enumerate(node.ins) if isinstance(r, int) and r in program.depends)


def _layer_axes(program: Program, chain: tuple) -> tuple[tuple, tuple, int] | None:
    """``(weight axes, output axes, k)`` for the linear layer that starts `chain`: the weight's
    axes of output channels (one for a convolution or ``Dense``; several for a ``DenseGeneral``
    with ``features=(heads, dim)`` or an einsum with a head axis shared by weight and output),
    the axes that hold them in the layer's output, in the same order (last for a dense layer,
    a convolution's output feature axis: 1 for NCHW), and how many transposes right after the
    op belong to the layer (``W @ x`` under ``vmap``, as in Equinox's Linear, gives
    ``(out, batch)`` and a transpose). None when the input is a convolution's kernel."""
    node = program.nodes[chain[0]]
    x_pos = _dependent_position(program, node)
    w_ref = node.ins[1 - x_pos]
    w_ndim = len(program.avals[w_ref].shape) if isinstance(w_ref, int) else np.ndim(w_ref.value)
    if node.prim == "dot_general":
        # dot_general's output: batch axes, then the free axes of its first operand, then those
        # of its second
        contract, batch = (part[1 - x_pos] for part in node.eqn.params["dimension_numbers"])
        free = [a for a in range(w_ndim) if a not in contract and a not in batch]
        out_ndim = len(program.avals[node.outs[0]].shape)
        start = out_ndim - len(free) if x_pos == 0 else len(batch)
        w_axes = (*batch, *free)
        out_axes = (*range(len(batch)), *range(start, start + len(free)))
    elif x_pos == 0:
        spec = node.eqn.params["dimension_numbers"]
        w_axes, out_axes = (spec.rhs_spec[0],), (spec.out_spec[1],)
    else:
        return None
    k = 0
    while k + 1 < len(chain) and program.nodes[chain[k + 1]].prim == "transpose":
        permutation = tuple(program.nodes[chain[k + 1]].eqn.params["permutation"])
        out_axes = tuple(permutation.index(a) for a in out_axes)
        k += 1
    return tuple(int(a) for a in w_axes), out_axes, k


def _linear_place(program: Program, chain: tuple, name: str, is_input: bool, rule, env) -> list:
    node = program.nodes[chain[0]]
    x_pos = _dependent_position(program, node)
    w = _operand(node.ins[1 - x_pos], env)
    x = env[node.ins[x_pos]]
    w_axes, out_axes, k = _layer_axes(program, chain) or ((), (), 0)
    transposes = [program.nodes[j] for j in chain[1:k + 1]]
    out_aval = program.avals[program.nodes[chain[k]].outs[0]]
    steps = []  # (node, position of the running value; None for a shape op)
    current = program.nodes[chain[k]].outs[0]
    for j in chain[k + 1:]:
        nj = program.nodes[j]
        steps.append((nj, None if len(nj.ins) == 1 else 0 if nj.ins[0] == current else 1))
        current = nj.outs[0]
    # The shape ops among the steps lay the layer's output out again (a transpose to NCHW, a
    # reshape to (n, h * w, c)); the affine ops (a negation among them) act per channel, so
    # they commute with them.
    layout = [(nj, pos) for nj, pos in steps if pos is None and nj.prim != "neg"]
    end_axes = _channels_after(program, layout, out_axes)
    # Probes of the affine ops, one value per channel; full-sized where shape ops (which fix
    # their sizes) are among them.
    probe = (out_aval.shape if layout
             else tuple(d if a in out_axes else 1 for a, d in enumerate(out_aval.shape)))
    one_per_channel = tuple(slice(None) if a in out_axes else slice(0, 1)
                            for a in range(len(out_aval.shape)))
    end_shape = program.avals[current].shape
    one_per_end_channel = tuple(slice(None) if a in end_axes else slice(0, 1)
                                for a in range(len(end_shape)))
    # Every array the custom VJP needs is an argument (never a closure), so that it may be traced.
    consts = [None if pos is None else _operand(nj.ins[1 - pos], env) for nj, pos in steps]

    def affine(value, cs):
        return _apply_steps(steps, value, cs)

    def op_alone(xv, wv):
        return node.bind(*([xv, wv] if x_pos == 0 else [wv, xv]))[0]

    if node.prim == "conv_general_dilated":  # rules differentiate it: XLA:CPU's fast forms
        op_alone = cpu_friendly(op_alone)

    def lin(xv, wv):
        value = op_alone(xv, wv)
        for t in transposes:
            value = t.bind(value)[0]
        return value

    def laid_out(xv, wv):  # the linear map as the rules see it: in the chain's last layout
        return _apply_steps(layout, lin(xv, wv), [None] * len(layout))

    def forward(xv, wv, cs):
        return affine(lin(xv, wv), cs)

    def effective(wv, cs):
        if not steps:
            return wv, jnp.zeros(probe, out_aval.dtype)[one_per_channel]
        c = affine(jnp.zeros(probe, out_aval.dtype), cs)
        scale = _undo_layout(program, layout, affine(jnp.ones(probe, out_aval.dtype), cs) - c)
        weight = wv * _onto_weight(scale[one_per_channel], out_axes, w_axes, jnp.ndim(wv))
        return weight, c[one_per_end_channel]

    op = "dense" if node.prim == "dot_general" else "conv"
    if op == "conv":
        spec = node.eqn.params["dimension_numbers"].lhs_spec
        in_axis, batch_axis = (spec[1], spec[0]) if x_pos == 0 else (None, None)
    else:
        contracted = node.eqn.params["dimension_numbers"][0][x_pos]
        in_axis = int(contracted[0]) if len(contracted) == 1 else None
        batch_axis = None if 0 in contracted else 0

    @jax.custom_vjp
    def place(xv, wv, cs):
        return forward(xv, wv, cs)

    def fwd(xv, wv, cs):
        return forward(xv, wv, cs), (xv, wv, cs)

    def bwd(res, g):
        xv, wv, cs = res
        weight, bias = effective(wv, cs)
        layer = LinearLayer(name, op, weight, bias, laid_out, is_input, in_axis, batch_axis)
        gx = _ask(rule, "linear", name, (layer, xv, g), (xv,))
        if gx is None:
            gx = jax.vjp(lambda v: forward(v, wv, cs), xv)[1](g)[0]
        return gx, jnp.zeros_like(wv), jax.tree_util.tree_map(jnp.zeros_like, cs)

    place.defvjp(fwd, bwd)
    return [place(x, w, consts)]


def _channels_after(program: Program, layout: list, axes: tuple) -> frozenset:
    """The axes that hold the layer's channels `axes` after the shape ops `layout`
    (:func:`_moved`; the chain was folded only where each one keeps them whole)."""
    channels = frozenset(axes)
    for nj, _ in layout:
        channels = _moved(program, nj, channels)
    return channels


def _undo_layout(program: Program, layout: list, value):
    """`value`, shaped as the output of the shape ops `layout`, laid out as their input."""
    for nj, _ in reversed(layout):
        if nj.prim == "transpose":
            value = jnp.transpose(value, np.argsort(nj.eqn.params["permutation"]))
        else:  # an order-preserving reshape (or a cast)
            value = value.reshape(program.avals[nj.ins[0]].shape)
    return value


def _moved(program: Program, node: Node, channels: frozenset) -> frozenset | None:
    """The axes of `node`'s output that hold what the axes `channels` of its input held, for a
    transpose, a float cast, or an order-preserving reshape that keeps each of them a whole
    axis (``(n, h, w, c) -> (n, h * w, c)``, vmap's size-1 axes); None for other ops and where
    a channel axis is split or merged (a flatten)."""
    if len(node.ins) != 1 or not (node.prim in ("transpose", "convert_element_type")
                                  or order_preserving(node)):
        return None
    before, after = (program.avals[r].shape for r in (node.ins[0], node.outs[0]))
    if node.prim == "transpose":
        permutation = tuple(node.eqn.params["permutation"])
        return frozenset(permutation.index(a) for a in channels)
    if node.prim == "convert_element_type":
        return channels if before == after else None
    moved = set()
    for a in channels:
        inner = math.prod(before[a + 1:])
        hits = [b for b in range(len(after))
                if after[b] == before[a] and math.prod(after[b + 1:]) == inner]
        if not hits:
            return None
        moved.add(hits[0])
    return frozenset(moved)


def _onto_weight(scale, out_axes: tuple, w_axes: tuple, w_ndim: int):
    """`scale` (a layer output's shape with size 1 off its channel axes `out_axes`) laid onto
    a weight of rank `w_ndim` whose axes `w_axes` hold those channels, in the same order."""
    sizes = tuple(scale.shape[a] for a in out_axes)
    rest = [a for a in range(jnp.ndim(scale)) if a not in out_axes]
    scale = jnp.transpose(scale, (*out_axes, *rest)).reshape(sizes)
    scale = jnp.transpose(scale, tuple(np.argsort(w_axes)))  # the weight's axis order
    return jnp.expand_dims(scale, [a for a in range(w_ndim) if a not in w_axes])


def _apply_steps(steps: list, value, consts: list):
    """`value` through the ops of `steps` (``(node, position of the running value)``, the
    position None for a one-operand shape op), each two-operand op with its constant."""
    for (node, pos), c in zip(steps, consts):
        value = node.bind(*([value] if pos is None else [value, c] if pos == 0 else [c, value]))[0]
    return value


def _input_views(program: Program) -> set:
    """The model's input and its views through layout ops (reshapes, broadcasts such as the
    ``x[None]`` of a layer under ``vmap`` or a ``jnp.repeat`` upsampling, transposes, slices,
    flips, casts, a ``jnp.pad``, a concatenation with constants such as a CoordConv channel)
    and elementwise affine maps with constants (an input normalisation, ``(x - mean) / std``),
    and resamplings (``jax.image.resize``, :func:`jaxplain.core._channels.resamples`), and the
    gradient gates ``select_n(p, stop_gradient(v), v)`` of a vmapped ``lax.cond`` (their value
    is ``v``): what a layer that consumes the input reads."""
    views = {program.input_id}
    fixed, axes = fixed_values(program), channel_axes(program)
    gated = {}
    for node in program.nodes:
        if node.prim == "stop_gradient":
            gated[node.outs[0]] = node.ins[0]
        if gradient_gate(node, gated):
            a, b = node.ins[1:]
            if (gated.get(a) == b and b in views) or (gated.get(b) == a and a in views):
                views.update(node.outs)
            continue
        data = [r for r in node.ins if isinstance(r, int) and r in program.depends]
        if not data or any(r not in views for r in data):
            continue
        if node.prim in _LAYOUT or resamples(node, program, fixed, axes):
            views.update(node.outs)
        elif node.prim in _AFFINE_WITH_CONSTANT and len(node.ins) == 2 and len(data) == 1:
            if ((node.prim != "div" or node.ins[0] == data[0])
                    and program.avals[node.outs[0]].shape == program.avals[data[0]].shape):
                views.update(node.outs)
    return views


# Ops that move, copy, pad or cast the values of their input-dependent operands, any others
# being constants (a pad's value, a concatenated constant channel).
_LAYOUT = frozenset({"reshape", "squeeze", "expand_dims", "broadcast_in_dim", "transpose", "rev",
                     "slice", "pad", "concatenate", "stack", "copy", "copy_p",
                     "convert_element_type"})
# Two-operand ops that are affine in the input when the other operand is a constant (a division
# only as ``x / c``).
_AFFINE_WITH_CONSTANT = frozenset({"add", "sub", "mul", "div"})


def _operand(ref, env):
    return jnp.asarray(ref.value) if isinstance(ref, Lit) else env[ref]


def _folded(program: Program, chain: tuple, consumers: tuple) -> tuple:
    """The longest start of `chain` (a linear op, its transposes and the elementwise affine ops with
    constants after it), continued past its end through the shape ops and affine ops that follow it
    alone, that folds into the layer's weight and bias: its affine ops act per output channel (a
    bias add, BatchNorm, a LayerScale, a negation ``-h``), whichever axes hold the channels, also
    behind shape ops that keep each channel axis whole (a PyTorch port's transpose to NCHW before
    ``BatchNorm(axis=1)``, a reshape to ``(n, h * w, c)``), and it ends on such an affine op or on a
    value of the layer's output shape. What follows (a positional table, a padding mask, a flatten)
    stays outside the layer, as a separate op after a ``torch.nn.Linear`` or ``Conv1d`` in Zennit:
    relevance passes it by its plain gradient. `consumers` is
    :func:`jaxplain.core._sites._consumers` of `program`."""
    axes = _layer_axes(program, chain)
    if axes is None:
        return chain[:1]
    _, out_axes, k = axes
    count, by_input = consumers
    current = program.nodes[chain[k]].outs[0]
    shape = program.avals[current].shape
    channels, nodes, end = frozenset(out_axes), list(chain), k + 1
    at = k + 1
    while True:
        if at == len(nodes):  # past the group: ops that read the running value alone
            j = by_input.get(current) if count[current] == 1 else None
            if j is None or not (_affine_step(program, program.nodes[j], current)
                                 or program.nodes[j].prim == "neg"
                                 or _moved(program, program.nodes[j], channels)):
                break
            nodes.append(j)
        nj = program.nodes[nodes[at]]
        now = program.avals[current].shape
        if len(nj.ins) == 2:  # an affine op with a constant (one operand: a shape op, a cast)
            other = nj.ins[1] if nj.ins[0] == current else nj.ins[0]
            held = program.avals[other].shape if isinstance(other, int) else jnp.shape(other.value)
            held = (1,) * (len(now) - len(held)) + tuple(held)
            if any(d != 1 for a, d in enumerate(held) if a not in channels):
                break
            end = at + 1
        elif nj.prim == "neg":  # ``-h``: a scale by -1, as ``h * -1.0``
            end = at + 1
        else:
            channels = _moved(program, nj, channels)
            if channels is None:
                break
        current = nj.outs[0]
        if program.avals[current].shape == shape and nj.prim != "convert_element_type":
            end = at + 1  # the end of a round trip: a place to stop (a final cast is not)
        at += 1
    return tuple(nodes[:end])


def _batch_first(ask: Callable, v_axis, y_axis) -> Callable:
    """`ask(v, y, g, pullback)` given its values batch first, as rules expect them (DeepLIFT
    splits ``[x; baseline]`` on the first axis), where ``vmap`` keeps the batch of ``v`` on
    axis `v_axis` and that of ``y`` (and ``g``) on `y_axis` (an Equinox ``W @ x`` without a bias
    and its activation: ``(features, batch)``); its answer is moved back."""
    v_axis, y_axis = (a if isinstance(a, int) else 0 for a in (v_axis, y_axis))
    if v_axis == y_axis == 0:
        return ask

    def front(a, axis):
        return jnp.moveaxis(a, axis, 0)

    def back(a, axis):
        return jnp.moveaxis(a, 0, axis)

    def moved(v, y, g, pullback):
        gx = ask(front(v, v_axis), front(y, y_axis), front(g, y_axis),
                 lambda c: front(pullback(back(c, y_axis)), v_axis))
        return None if gx is None else back(gx, v_axis)

    return moved


def _one_operand_place(forward: Callable, ask: Callable, v, cs):
    """``forward(v, cs)`` under a custom VJP whose cotangent for ``v`` is
    ``ask(v, y, g, pullback)``, or the plain gradient where that returns None (``pullback(c)``
    is the plain gradient for ``v`` of a cotangent ``c`` of ``y``); the constants ``cs`` get
    none."""

    @jax.custom_vjp
    def place(v, cs):
        return forward(v, cs)

    def fwd(v, cs):
        y = forward(v, cs)
        return y, (v, y, cs)

    def bwd(res, g):
        v, y, cs = res
        pullback = jax.vjp(lambda u: forward(u, cs), v)[1]
        gx = ask(v, y, g, lambda c: pullback(c)[0])
        if gx is None:
            gx = pullback(g)[0]
        return gx, jax.tree_util.tree_map(jnp.zeros_like, cs)

    place.defvjp(fwd, bwd)
    return place(v, cs)


def _activation_place(program: Program, node: Node, rule, name: str, env, batch: dict) -> list:
    pos = _dependent_position(program, node)
    others = [_operand(r, env) for k, r in enumerate(node.ins) if k != pos]

    def forward(v, cs):
        args = list(cs)
        args.insert(pos, v)
        return node.bind(*args)[0]

    with_pullback = _takes(rule.activation, 5)

    def ask(v, y, g, pullback):
        args = (node.activation, v, y, g) + ((pullback,) if with_pullback else ())
        return _ask(rule, "activation", name, args, (v,))

    ask = _batch_first(ask, batch.get(node.ins[pos]), batch.get(node.outs[0]))
    return [_one_operand_place(forward, ask, env[node.ins[pos]], others)]


def _scale_place(program: Program, node: Node, rule, name: str, env, batch: dict) -> list:
    """The per-channel scale `node` (see :func:`_scales`) under a custom VJP that asks the
    rule's ``scale(op, x, y, g)`` (``op`` is ``"mul"`` or ``"div"``)."""
    pos = _dependent_position(program, node)
    constant = _operand(node.ins[1 - pos], env)

    def forward(v, cs):
        return node.bind(*([v, cs] if pos == 0 else [cs, v]))[0]

    def ask(v, y, g, pullback):
        return _ask(rule, "scale", name, (node.prim, v, y, g), (v,))

    ask = _batch_first(ask, batch.get(node.ins[pos]), batch.get(node.outs[0]))
    return [_one_operand_place(forward, ask, env[node.ins[pos]], constant)]


def _takes(method: Callable, count: int) -> bool:
    """True when a rule's `method` takes `count` named positional arguments: an activation's
    fifth (``pullback``, after ``(op, x, y, g)``), a product's seventh (``gates``, after
    ``(op, a, b, y, g, pullback)``). A method of fewer (the older form, or ``*args``, which may
    forward to one) is called without it."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): the shorter form
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in positional for p in parameters) >= count


def _normalizer_place(node: Node, rule, name: str, env, batch: dict) -> list:
    def forward(v, cs):
        return node.bind(v)[0]

    def ask(v, y, g, pullback):
        return _ask(rule, "normalizer", name, (node.prim, v, y, g), (v,))

    ask = _batch_first(ask, batch.get(node.ins[0]), batch.get(node.outs[0]))
    return [_one_operand_place(forward, ask, env[node.ins[0]], [])]


def _pool_place(program: Program, chain: tuple, op: str, rule, method: str, name: str, env,
                batch: dict) -> list:
    """The pool or sum `chain` (see `_plan`) under a custom VJP that asks the rule's `method`
    (``pool`` or ``sum``) ``(op, v, y, g, pullback)``; no rule: the plain gradient, with a max's
    ties as a ``reduce_window``'s."""
    node = program.nodes[chain[0]]
    at = _dependent_position(program, node)  # a scatter-add's updates; others: constants
    others = [_operand(r, env) for k, r in enumerate(node.ins) if k != at]
    steps, consts, current = [], [], node.outs[0]
    for j in chain[1:]:  # shape ops (one operand), then the division by the window size
        nj = program.nodes[j]
        pos = None if len(nj.ins) == 1 else 0 if nj.ins[0] == current else 1
        steps.append((nj, pos))
        consts.append(None if pos is None else _operand(nj.ins[1 - pos], env))
        current = nj.outs[0]

    def pool(v, fixed):
        if node.prim == "reduce_max" and jnp.issubdtype(v.dtype, jnp.floating):
            return first_max(v, tuple(node.eqn.params["axes"]))  # ties as reduce_window's
        args = list(fixed)
        args.insert(at, v)
        return node.bind(*args)[0]

    @cpu_friendly  # rules and the plain gradient differentiate it: XLA:CPU's fast forms
    def forward(v, cs):
        return _apply_steps(steps, pool(v, cs[0]), cs[1])

    def ask(v, y, g, pullback):
        return None if rule is None else _ask(rule, method, name, (op, v, y, g, pullback), (v,))

    ask = _batch_first(ask, batch.get(node.ins[at]), batch.get(program.nodes[chain[-1]].outs[0]))
    return [_one_operand_place(forward, ask, env[node.ins[at]], (others, consts))]


def _two_operand_place(node: Node, rule, method: str, name: str, env,
                       gates: tuple[bool, bool] = (False, False)) -> list:
    """``node`` (of two input-dependent operands) under a custom VJP whose cotangents are the
    rule's ``add(a, b, y, g)`` or ``product(op, a, b, y, g, pullback)``, or the plain gradient
    where that returns None; a ``product`` that takes a seventh argument is given `gates`
    (:func:`_gates`)."""
    more = (gates,) if method == "product" and _takes(rule.product, 7) else ()

    def args(a, b, y, g, pullback):
        return (a, b, y, g) if method == "add" else (PRODUCTS[node.prim], a, b, y, g, pullback,
                                                      *more)

    def forward(a, b):
        return node.bind(a, b)[0]

    @jax.custom_vjp
    def place(a, b):
        return forward(a, b)

    def fwd(a, b):
        y = forward(a, b)
        return y, (a, b, y)

    def bwd(res, g):
        a, b, y = res
        pullback = jax.vjp(forward, a, b)[1]
        grads = _ask(rule, method, name, args(a, b, y, g, pullback), (a, b))
        return tuple(pullback(g) if grads is None else grads)

    place.defvjp(fwd, bwd)
    return [place(env[node.ins[0]], env[node.ins[1]])]


def linear_layer_names(f: Callable, x) -> tuple[str, ...]:
    """The names rules see as ``LinearLayer.name`` for `f` at `x`'s shape, in program order."""
    program, site_map = program_of(f, x, unrolled=True)
    return tuple(dict.fromkeys(name for i, name in sorted(site_map.node_names.items())
                               if i in site_map.groups and i not in site_map.pools))


def unruled_products(f: Callable, x, rules) -> tuple[str, ...]:
    """The places of `f` (at `x`'s shape) that multiply two input-dependent values (gates,
    attention's ``q k^T``) and that `rules` leave to the plain gradient, by site name; kept per
    traced program and hashable `rules` (an LRP call asks on every call)."""
    program, site_map = program_of(f, x, unrolled=True)
    try:
        known = _UNRULED.setdefault(program, {})
        if rules not in known:
            known[rules] = _unruled_products(program, site_map, rules)
        return known[rules]
    except TypeError:  # rules holding an array
        return _unruled_products(program, site_map, rules)


# traced program -> {rules: unruled_products}; weak, so an entry goes with its program
_UNRULED: "weakref.WeakKeyDictionary[Program, dict]" = weakref.WeakKeyDictionary()


def _unruled_products(program: Program, site_map: SiteMap, rules) -> tuple[str, ...]:
    plan = _plan(program, site_map, rules)
    return tuple(dict.fromkeys(
        name for i, name in sorted(site_map.node_names.items())
        if program.nodes[i].prim in PRODUCTS and i not in plan and i not in site_map.groups
        and i not in site_map.pools and program.nodes[i].activation is None))


def activation_places(f: Callable, x, rules) -> tuple[tuple[str, str], ...]:
    """``(site name, op)`` of each activation of `f` (at `x`'s shape) at which `rules` are
    asked (``op`` is ``"relu"``, ``"tanh"``, ...), in program order."""
    program, site_map = program_of(f, x, unrolled=True, warn=False)
    plan = _plan(program, site_map, rules)
    return tuple((entry[2], program.nodes[i].activation) for i, entry in sorted(plan.items())
                 if entry[0] == "activation")


def _plan(program: Program, site_map: SiteMap, rules) -> dict[int, tuple]:
    by_name = {s.name: s for s in site_map.sites}
    inputs = _input_views(program)
    plan: dict[int, tuple] = {}
    producer = {r: node for node in program.nodes for r in node.outs}  # value id -> its node
    consumers = _consumers(program)
    asked = (any(hasattr(rule, "scale") for _, rule in rules) if isinstance(rules, tuple)
             else hasattr(rules, "scale"))
    for i, (name, _) in (_scales(program, site_map, consumers) if asked else {}).items():
        dtype = program.avals[program.nodes[i].outs[0]].dtype
        rule = _pick(rules, Site(name, (), dtype, "scale", program.nodes[i].prim), "scale")
        if rule is not None:
            plan[i] = ("scale", rule, name)
    for i, name in site_map.node_names.items():
        node = program.nodes[i]
        dtype = node.outs and program.avals[node.outs[0]].dtype
        site = by_name.get(name) or Site(name, (), dtype, "linear", node.prim)
        if i in site_map.pools:
            op = site_map.pools[i]
            method = "sum" if op in SUMS else "pool"
            rule = _pick(rules, site, method)
            if rule is not None or node.prim == "reduce_max":  # a tie goes as reduce_window's
                chain = site_map.groups[i]
                for j in chain[:-1]:
                    plan[j] = ("skip",)
                plan[chain[-1]] = ("pool", rule, method, chain, op, name)
        elif i in site_map.groups:
            rule = _pick(rules, site, "linear")
            if rule is not None:
                chain = _folded(program, site_map.groups[i], consumers)
                for j in chain[:-1]:
                    plan[j] = ("skip",)
                x_ref = node.ins[_dependent_position(program, node)]
                plan[chain[-1]] = ("linear", rule, chain, name, x_ref in inputs)
        elif node.activation is not None:
            rule = _pick(rules, site, "activation")
            if rule is not None:
                plan[i] = ("activation", rule, name)
        elif node.prim == "add":
            rule = _pick(rules, site, "add")
            if rule is not None:
                plan[i] = ("add", rule, name)
        elif node.prim in NORMALIZERS:
            rule = _pick(rules, site, "normalizer")
            if rule is not None:
                plan[i] = ("normalizer", rule, name)
        elif node.prim in PRODUCTS:
            rule = _pick(rules, site, "product")
            if rule is not None:
                plan[i] = ("product", rule, name, _gates(node, producer))
    return plan


def _scales(program: Program, site_map: SiteMap, consumers: tuple) -> dict[int, tuple]:
    """``{node index: (name, layer)}`` for the per-channel scales that fold into no linear layer: a
    ``mul`` (or ``v / c``) of an input-dependent value by a constant that varies along one axis
    only, the value's channel axis (:func:`channel_axes`; any axis but the batch's on the input and
    its views; the one axis besides the batch's where the value has no other, as a BatchNorm1d's
    ``(batch, features)`` after a flatten), where the value comes from no linear layer's folded
    chain (a BatchNorm after an activation, a pool, a residual sum or on the input; its shift is an
    add, whose gradient passes relevance on unchanged) and from no normalisation (a LayerNorm's
    ``weight * (x - mean) * inv``). `name` is the scope of the node (e.g. ``"bn"``), `layer` the
    linear layer whose output it scales, which another op reads too (so it is not folded: the skip
    of a pre-activation block), else None."""
    chains = {i: chain if i in site_map.pools else _folded(program, chain, consumers)
              for i, chain in site_map.groups.items()}
    taken = {j for chain in chains.values() for j in chain}
    ends = {program.nodes[chain[-1]].outs[0]: site_map.node_names.get(i)
            for i, chain in chains.items() if i not in site_map.pools}
    producer = {r: node for node in program.nodes for r in node.outs}
    batch, axes, inputs = batch_axes(program), channel_axes(program), _input_views(program)
    root = len(site_map.root)
    found = {}
    for i, node in enumerate(program.nodes):
        if i in taken or node.prim not in ("mul", "div") or node.activation is not None:
            continue
        data = [r for r in node.ins if isinstance(r, int) and r in program.depends]
        if len(data) != 1 or len(node.ins) != 2 or node.prim == "div" and node.ins[0] != data[0]:
            continue
        shape = program.avals[data[0]].shape
        other = node.ins[1] if node.ins[0] == data[0] else node.ins[0]
        held = program.avals[other].shape if isinstance(other, int) else np.shape(other.value)
        held = (1,) * (len(shape) - len(held)) + tuple(held)
        big = [a for a, d in enumerate(held) if d != 1]
        if (program.avals[node.outs[0]].shape != shape or len(big) != 1
                or held[big[0]] != shape[big[0]] or big[0] == batch.get(data[0], 0)):
            continue
        features = [a for a, d in enumerate(shape) if d != 1 and a != batch.get(data[0], 0)]
        if big[0] != axes.get(data[0], big[0] if data[0] in inputs or features == big else None):
            continue
        source = _source(program, data[0], producer)
        if source in producer and (producer[source].prim in NORMALIZERS or (
                producer[source].prim in PRODUCTS and all(
                    isinstance(r, int) and r in program.depends for r in producer[source].ins))):
            continue
        found[i] = ("/".join(node.stack[root:]) or f"{node.prim}_{i}", ends.get(source))
    return found


def _source(program: Program, ref: int, producer: dict) -> int:
    """The value that `ref` is computed from by shape ops and shifts by constants (a
    BatchNorm's ``- mean``) alone."""
    while ref in producer:
        node = producer[ref]
        data = [r for r in node.ins if isinstance(r, int) and r in program.depends]
        if len(data) != 1 or not (node.prim in _MOVES or node.prim in ("add", "sub")):
            break
        ref = data[0]
    return ref


def unfolded_scales(f: Callable, x) -> tuple[tuple[str, str | None], ...]:
    """``(name, layer)`` of the per-channel scales of `f` (at `x`'s shape) that fold into no
    linear layer (see :func:`_scales`), in program order: `layer` names the linear layer whose
    output the scale reads when another op reads that output too, else it is None."""
    program, site_map = program_of(f, x, unrolled=True, warn=False)
    if program not in _UNFOLDED:  # kept per traced program: an LRP call asks on every call
        found = _scales(program, site_map, _consumers(program))
        _UNFOLDED[program] = tuple(entry for _, entry in sorted(found.items()))
    return _UNFOLDED[program]


# traced program -> unfolded_scales; weak, so an entry goes with its program
_UNFOLDED: "weakref.WeakKeyDictionary[Program, tuple]" = weakref.WeakKeyDictionary()


def folded_scopes(f: Callable, x) -> dict[str, str]:
    """``{scope: layer}`` for the scopes (e.g. ``"bn"``) of the ops that fold into a linear
    layer of `f` (at `x`'s shape): a BatchNorm after a convolution, by the convolution's name."""
    program, site_map = program_of(f, x, unrolled=True, warn=False)
    consumers, root, found = _consumers(program), len(site_map.root), {}
    for i, chain in site_map.groups.items():
        if i in site_map.pools:
            continue
        name = site_map.node_names.get(i)
        for j in _folded(program, chain, consumers)[1:]:
            scope = "/".join(program.nodes[j].stack[root:])
            if scope and scope != name:
                found.setdefault(scope, name)
    return found


# Squashing activations whose output scales another value: the gate of a gated product.
GATE_ACTIVATIONS = frozenset({"sigmoid", "hard_sigmoid"})
# One-operand ops that move, copy or cast values (a gate's broadcast over positions stays a gate).
_MOVES = frozenset({"reshape", "squeeze", "expand_dims", "broadcast_in_dim", "transpose", "rev",
                    "slice", "split", "copy", "copy_p", "convert_element_type"})


def _gates(node: Node, producer: dict) -> tuple[bool, bool]:
    """For each operand of the product `node`, whether it is the output of a gate activation
    (:data:`GATE_ACTIVATIONS`: ``jax.nn.sigmoid``, ``lax.logistic``, ``jax.nn.hard_sigmoid``),
    possibly through layout ops (an SE gate's ``sigmoid(s)[:, None, None, :]``): read from the
    program, so the same for every example."""
    def gate(ref) -> bool:
        while isinstance(ref, int) and ref in producer:
            source = producer[ref]
            if source.activation in GATE_ACTIVATIONS:
                return True
            if source.prim not in _MOVES:
                return False
            ref = source.ins[0]
        return False

    return gate(node.ins[0]), gate(node.ins[1])


def _check_selectors(program: Program, site_map: SiteMap, rules) -> None:
    """ValueError, with close matches, for a name or glob of the ``(selector, rule)`` pairs
    that picks no place of the program (a typo would leave the plain gradient there)."""
    if not isinstance(rules, tuple):
        return
    names = list(dict.fromkeys(name for _, name in sorted(site_map.node_names.items())))
    opaque = opaque_nodes(program, site_map)
    names += [site.name for node, site in opaque if node.prim == "scan"]
    for selector, _ in rules:
        if callable(selector):
            continue
        for pattern in (selector,) if isinstance(selector, str) else selector:
            if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                raise _no_place_error(pattern, names, program, site_map, opaque)


def _no_place_error(pattern: str, names: list, program: Program, site_map: SiteMap,
                    opaque: list) -> ValueError:
    """The error for a selector `pattern` that picks none of the places `names`: it names a
    node that keeps its own backward pass (or a scope inside one), a scope of places, another
    site, or nothing known."""
    root = "/".join(site_map.root) + "/" if site_map.root else ""
    scopes = {scope[len(root):]: prim for scope, prim in program.opaque_scopes.items()
              if scope.startswith(root)}
    scopes.update((site.name, node.prim) for node, site in opaque)
    parts = pattern.split("/")
    inside = next((prim for k in range(len(parts), 0, -1) for scope, prim in scopes.items()
                   if fnmatch.fnmatchcase(scope, "/".join(parts[:k]))), None)
    if inside in OPAQUE_TEXT:
        what, how, fix = OPAQUE_TEXT[inside]
        return ValueError(
            f"rewrite_backward: {pattern!r} in rules names {what} or a value inside it: a site "
            f"whose insides are opaque to rules, as it keeps its own backward pass ({how}), so "
            f"no rule can act at a place in it. To have the rules act there, {fix}. The "
            f"places are: {', '.join(names) or '(none)'}.")
    if any(name.startswith(pattern + "/") for name in names):
        return ValueError(
            f"rewrite_backward: {pattern!r} in rules is a scope, not one place: select the "
            f"places in it with {pattern + '/*'!r} (they are "
            f"{', '.join(n for n in names if n.startswith(pattern + '/'))}).")
    return unknown_site_error(pattern, names, what="place (in rules)")


def rewrite_backward(f: Callable, rules) -> Callable:
    """`f` with identical forward values and a VJP that follows `rules`.

    Args:
      f: a model function, batch first.
      rules: one rule object applied everywhere, or a list of ``(selector, rule)`` pairs: at
        each place, the first pair whose selector picks the place's site name and whose rule
        has the method for that kind of place (a pair whose rule lacks it is passed over, so
        ``[("block1/*", ActivationRule()), ("*", LinearRule())]`` gives block1's linear
        layers ``LinearRule``). A name or glob that picks no place is a ``ValueError`` with
        close matches. A rule is a hashable instance (a frozen dataclass: equal rules share
        one compiled program, so a method that reads a global or class attribute sees its
        value at the first call until ``jaxplain.clear_caches()``: pass such values as fields,
        ``Scaled(gain=3.0)``, so that a new value is a new rule) that defines one or more of
        ``linear(layer: LinearLayer, x, g) -> gx``, ``activation(op, x, y, g) -> gx`` or
        ``activation(op, x, y, g, pullback) -> gx`` (an activation that takes a fifth
        argument is given the node's own plain-gradient ``pullback``, as ``pool`` is: its
        derivative with the model's parameters, ``leaky_relu``'s slope, ``elu``'s alpha),
        ``pool(op, x, y, g, pullback) -> gx`` (``op`` is ``"max_pool"``, ``"avg_pool"``,
        ``"mean"``, or ``"reduce_max"`` / ``"reduce_min"`` for a max over the channels
        (maxout) or a min over any non-batch axes, which are no sites; ``y`` is the pooled value, after an average's division and the shape ops
        ``vmap`` adds around an Equinox pool;
        ``pullback(c)`` is the plain gradient for ``x`` of a cotangent ``c`` of ``y``),
        ``sum(op, x, y, g, pullback) -> gx`` (as ``pool``; ``op`` is ``"reduce_sum"``,
        ``"scatter_add"`` or ``"cumsum"``, ``x`` the input-dependent terms),
        ``add(a, b, y, g) -> (ga, gb)``, ``normalizer(op, x, y, g) -> gx``
        (``op`` is ``"rsqrt"`` or ``"sqrt"`` of an input-dependent ``x``, the scale of a
        LayerNorm), ``scale(op, x, y, g) -> gx`` (``op`` is ``"mul"`` or ``"div"``:
        ``y = x * c`` or ``x / c`` with a constant ``c`` of one value per channel that no
        linear layer folds in, a BatchNorm after an activation, a pool or a residual sum, or
        on the input) and ``product(op, a, b, y, g, pullback) -> (ga, gb)`` (``op`` is
        ``"mul"`` or ``"matmul"``; ``pullback(c)`` is the plain gradient pair) or
        ``product(op, a, b, y, g, pullback, gates)`` (a product that takes a seventh argument
        is given ``gates``, a pair of bools read from the program, the same for every example:
        whether ``a``, ``b`` is a sigmoid's or hard sigmoid's output, possibly through layout
        ops such as an SE gate's ``[:, None, None, :]``); returning ``None`` or
        lacking the method means the plain gradient there. Rules see whole batches, batch
        first at activations, pools and normalisers (also where ``vmap`` keeps the value's
        batch axis elsewhere), and return values shaped like the inputs they are given; a
        rule that fails or answers in other shapes raises an error naming the place, the
        rule and the method.

    Returns:
      ``g`` with ``g(x) == f(x)`` whose ``jax.vjp``/``jax.grad`` use the rules.

    Example (guided backprop: pass only positive gradients through active ReLUs):
      >>> import dataclasses, jax, jax.numpy as jnp, jaxplain as jp
      >>> @dataclasses.dataclass(frozen=True)  # equal by value: a fresh Guided() reuses the program
      ... class Guided:
      ...     def activation(self, op, x, y, g):
      ...         return g * (x > 0) * (g > 0)
      >>> f = lambda x: jax.nn.relu(x * jnp.array([1.0, -1.0])) @ jnp.array([[1.0], [-2.0]])
      >>> jax.grad(lambda x: jp.rewrite_backward(f, Guided())(x).sum())(jnp.array([[1.0, -1.0]]))
      Array([[ 1., -0.]], dtype=float32)
    """

    return compiled(_rewritten, f, _checked_rules(rules))


def _checked_rules(rules):
    """`rules` as the compiled function's key: one rule, or a tuple of ``(selector, rule)``
    pairs with hashable selectors; a TypeError for anything else."""
    if isinstance(rules, Mapping):
        raise TypeError(f"rules must be one rule or a list of (selector, rule) pairs; got a "
                        f"{type(rules).__name__}: pass a list of (selector, rule) pairs, e.g. "
                        f"list(rules.items()) (at each place the first pair whose rule has a "
                        f"method for it applies)")
    if isinstance(rules, Sequence) and not isinstance(rules, str):
        for entry in rules:
            if not (isinstance(entry, tuple) and len(entry) == 2):
                raise TypeError("rules must be one rule object or a list of (selector, rule) "
                                f"pairs; got the entry {entry!r}")
            _check_rule(entry[1], f"the rule for {entry[0]!r}")
        return tuple((selector_key(selector), rule) for selector, rule in rules)
    _check_rule(rules, "rules")
    return rules


def _check_rule(rule, where: str) -> None:
    """TypeError unless `rule` is a hashable instance with at least one rule method."""
    if isinstance(rule, str):
        raise TypeError(f"{where} is the string {rule!r}; a rule is an object with one or more "
                        f"of the methods {', '.join(RULE_METHODS)} (see rewrite_backward)")
    if isinstance(rule, type):
        raise TypeError(f"{where} is the class {rule.__name__}; pass an instance, "
                        f"{rule.__name__}()")
    if not any(hasattr(rule, method) for method in RULE_METHODS):
        close = [f"rename {name!r} to {match[0]!r}" for name in dir(rule)
                 if not name.startswith("_")
                 for match in [difflib.get_close_matches(name, RULE_METHODS, n=1, cutoff=0.75)]
                 if match]
        hint = f"; {', '.join(close)}" if close else ""
        raise TypeError(f"{where} ({type(rule).__name__}) has none of the rule methods "
                        f"{', '.join(RULE_METHODS)}, so it would change nothing{hint}")
    _refuse_array_parameters(rule)
    try:
        hash(rule)
    except TypeError:
        raise TypeError(f"{where} ({type(rule).__name__}) is not hashable: rules are static, "
                        f"equal rules share one compiled program (an unhashable rule compiles "
                        f"anew on every call); make it a frozen dataclass, "
                        f"@dataclasses.dataclass(frozen=True)") from None


def _refuse_array_parameters(value, depth: int = 0) -> None:
    """Raise a TypeError naming the rule whose dataclass field holds a JAX array (traced or
    not): rules are static, hashed to find the compiled program, so their parameters must be
    Python numbers. Looks through tuples and nested dataclasses (a Composite's rules)."""
    if depth > 4:
        return
    if isinstance(value, tuple):
        for item in value:
            _refuse_array_parameters(item, depth + 1)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            item = getattr(value, field.name, None)
            if isinstance(item, jax.Array):
                raise TypeError(
                    f"rule {type(value).__name__}.{field.name} is a JAX array "
                    f"({'traced' if isinstance(item, jax.core.Tracer) else 'concrete'}): rule "
                    f"parameters are static (equal rules share one compiled program), so pass "
                    f"a Python number, e.g. float(value); to sweep a parameter, loop in Python "
                    f"(each value compiles once) instead of jit or vmap over it.")
            _refuse_array_parameters(item, depth + 1)


def _rewritten(f: Callable, rules, x):
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"rewrite_backward changes the gradient with respect to x, which needs a "
                        f"floating x; got {x.dtype} (for token ids, rewrite a function of the "
                        f"embeddings)")
    program, site_map = program_of(f, x, unrolled=True)  # rules apply inside loops too
    _check_selectors(program, site_map, rules)
    warn_opaque(program, site_map, lambda site, kind: _pick(rules, site, kind) is not None)
    plan = _plan(program, site_map, rules)
    batch = batch_axes(program) if plan else {}

    def replace(i, node, env):
        entry = plan.get(i)
        if entry is None:
            return None
        kind = entry[0]
        if kind == "skip":  # inside a linear group: computed at the group's last node
            return [None] * len(node.outs)
        if kind == "linear":
            _, rule, chain, name, is_input = entry
            return _linear_place(program, chain, name, is_input, rule, env)
        if kind == "pool":
            _, rule, method, chain, op, name = entry
            return _pool_place(program, chain, op, rule, method, name, env, batch)
        _, rule, name, *gates = entry  # a product's: which operands are gates
        if kind == "activation":
            return _activation_place(program, node, rule, name, env, batch)
        if kind == "scale":
            return _scale_place(program, node, rule, name, env, batch)
        if kind == "normalizer":
            return _normalizer_place(node, rule, name, env, batch)
        return _two_operand_place(node, rule, kind, name, env, *gates)  # add, product

    return run(program, x, replace=replace)[0]
