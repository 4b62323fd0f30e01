"""rewrite_backward: the same forward values, a VJP that follows per-layer rules.

LRP, AttnLRP, DeepLIFT, guided backprop and deconvnet are rules over these places in a traced
program:

* linear layers: a dot_general or convolution with one input-dependent operand and constant
  weights, together with the elementwise affine-by-constant ops that follow it (bias add,
  BatchNorm in inference mode), folded into one effective weight and bias;
* activations (relu in all its spellings, tanh, sigmoid, ...);
* pools (max pooling; average pooling with its division by the window size; a mean over the
  axes between the batch and the last, e.g. global average pooling);
* residual adds of two input-dependent values;
* normalisers: a square root or reciprocal square root of an input-dependent value (the scale
  of a LayerNorm or RMSNorm);
* products of two input-dependent values (``mul``, and ``matmul`` for a dot_general: attention's
  ``q k^T`` and ``p v``, gated units), when neither depends on the input only through a
  normaliser (so a LayerNorm's ``(x - mean) * scale`` is no product).

Each such place runs under a ``jax.custom_vjp`` whose backward asks the rule; a rule that has no
method for the place, or returns ``None``, gets the plain gradient.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxplain.core._capture import compiled, program_of, selector_key
from jaxplain.core._cpu import cpu_friendly
from jaxplain.core._program import Lit, Node, Program, run
from jaxplain.core._select import matches
from jaxplain.core._sites import NORMALIZERS, PRODUCTS, Site, SiteMap, pool_op


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
      is_input: True when the layer consumes the model's input directly.
    """

    name: str
    op: str
    weight: Any
    bias: Any
    apply: Callable
    is_input: bool

    def __call__(self, x):
        return self.apply(x, self.weight) + self.bias


def _pick(rules, site: Site, method: str):
    if isinstance(rules, Sequence) and not isinstance(rules, str):
        for entry in rules:
            if not (isinstance(entry, tuple) and len(entry) == 2):
                raise TypeError("rules must be one rule object or a sequence of (selector, rule) pairs; "
                                f"got the entry {entry!r}")
            selector, rule = entry
            if matches(selector, site):
                return rule if hasattr(rule, method) else None
        return None
    return rules if hasattr(rules, method) else None


def _dependent_position(program: Program, node: Node) -> int:
    return next(k for k, r in enumerate(node.ins) if isinstance(r, int) and r in program.depends)


def _out_axis(node: Node, x_pos: int, w_ndim: int, out_ndim: int) -> int | None:
    """The axis of the weight that maps to the output's last axis, or None."""
    if x_pos != 0:
        return None
    if node.prim == "dot_general":
        (_, rc), (lb, rb) = node.eqn.params["dimension_numbers"]
        free = [a for a in range(w_ndim) if a not in rc]
        return free[0] if not lb and not rb and len(free) == 1 else None
    spec = node.eqn.params["dimension_numbers"]
    return spec.rhs_spec[0] if spec.out_spec[1] == out_ndim - 1 else None


def _linear_place(program: Program, chain: tuple, name: str, rule, env) -> list:
    node = program.nodes[chain[0]]
    x_pos = _dependent_position(program, node)
    w = _operand(node.ins[1 - x_pos], env)
    x = env[node.ins[x_pos]]
    out_aval = program.avals[node.outs[0]]
    axis = _out_axis(node, x_pos, jnp.ndim(w), len(out_aval.shape))
    steps = []  # (node, position of the running value)
    current = node.outs[0]
    for j in chain[1:]:
        nj = program.nodes[j]
        steps.append((nj, 0 if nj.ins[0] == current else 1))
        current = nj.outs[0]
    channels = out_aval.shape[-1] if out_aval.shape else 1
    # Every array the custom VJP needs is an argument (never a closure), so that it may be traced.
    consts = [_operand(nj.ins[1 - pos], env) for nj, pos in steps]

    def affine(value, cs):
        for (nj, pos), c in zip(steps, cs):
            value = nj.bind(*([value, c] if pos == 0 else [c, value]))[0]
        return value

    def lin(xv, wv):
        return node.bind(*([xv, wv] if x_pos == 0 else [wv, xv]))[0]

    if node.prim == "conv_general_dilated":  # rules differentiate it: XLA:CPU's fast forms
        lin = cpu_friendly(lin)

    def forward(xv, wv, cs):
        return affine(lin(xv, wv), cs)

    def effective(wv, cs):
        if not steps:
            return wv, jnp.zeros((channels,), out_aval.dtype)
        shape = (1,) * (len(out_aval.shape) - 1) + (channels,)
        c = affine(jnp.zeros(shape, out_aval.dtype), cs)
        scale = jnp.reshape(affine(jnp.ones(shape, out_aval.dtype), cs) - c, (-1,))
        scale = jnp.reshape(scale, [channels if a == axis else 1 for a in range(jnp.ndim(wv))])
        return wv * scale, c

    is_input = node.ins[x_pos] == program.input_id
    op = "dense" if node.prim == "dot_general" else "conv"

    @jax.custom_vjp
    def place(xv, wv, cs):
        return forward(xv, wv, cs)

    def fwd(xv, wv, cs):
        return forward(xv, wv, cs), (xv, wv, cs)

    def bwd(res, g):
        xv, wv, cs = res
        weight, bias = effective(wv, cs)
        gx = rule.linear(LinearLayer(name, op, weight, bias, lin, is_input), xv, g)
        if gx is None:
            gx = jax.vjp(lambda v: forward(v, wv, cs), xv)[1](g)[0]
        return gx, jnp.zeros_like(wv), jax.tree_util.tree_map(jnp.zeros_like, cs)

    place.defvjp(fwd, bwd)
    return [place(x, w, consts)]


def _operand(ref, env):
    return jnp.asarray(ref.value) if isinstance(ref, Lit) else env[ref]


def _foldable(program: Program, chain: tuple) -> bool:
    """True when the affine ops after the layer act per output channel (last axis), so they
    fold into the layer's weight and bias (e.g. bias add, BatchNorm)."""
    node = program.nodes[chain[0]]
    x_pos = _dependent_position(program, node)
    w_ref = node.ins[1 - x_pos]
    w_ndim = len(program.avals[w_ref].shape) if isinstance(w_ref, int) else jnp.ndim(w_ref.value)
    out_ndim = len(program.avals[node.outs[0]].shape)
    if _out_axis(node, x_pos, w_ndim, out_ndim) is None:
        return False
    current = node.outs[0]
    for j in chain[1:]:
        nj = program.nodes[j]
        other = nj.ins[1] if nj.ins[0] == current else nj.ins[0]
        shape = program.avals[other].shape if isinstance(other, int) else jnp.shape(other.value)
        if any(d != 1 for d in tuple(shape)[:-1]):
            return False
        current = nj.outs[0]
    return True


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


def _activation_place(program: Program, node: Node, rule, env) -> list:
    pos = _dependent_position(program, node)
    others = [_operand(r, env) for k, r in enumerate(node.ins) if k != pos]

    def forward(v, cs):
        args = list(cs)
        args.insert(pos, v)
        return node.bind(*args)[0]

    def ask(v, y, g, pullback):
        return rule.activation(node.activation, v, y, g)

    return [_one_operand_place(forward, ask, env[node.ins[pos]], others)]


def _normalizer_place(node: Node, rule, env) -> list:
    def forward(v, cs):
        return node.bind(v)[0]

    def ask(v, y, g, pullback):
        return rule.normalizer(node.prim, v, y, g)

    return [_one_operand_place(forward, ask, env[node.ins[0]], [])]


def _pool_place(program: Program, chain: tuple, op: str, rule, env) -> list:
    node = program.nodes[chain[0]]
    steps, consts, current = [], [], node.outs[0]
    for j in chain[1:]:
        nj = program.nodes[j]
        pos = 0 if nj.ins[0] == current else 1
        steps.append((nj, pos))
        consts.append(_operand(nj.ins[1 - pos], env))
        current = nj.outs[0]

    @cpu_friendly  # rules and the plain gradient differentiate it: XLA:CPU's fast forms
    def forward(v, cs):
        value = node.bind(v)[0]
        for (nj, pos), c in zip(steps, cs):
            value = nj.bind(*([value, c] if pos == 0 else [c, value]))[0]
        return value

    def ask(v, y, g, pullback):
        return rule.pool(op, v, y, g, pullback)

    return [_one_operand_place(forward, ask, env[node.ins[0]], consts)]


def _two_operand_place(node: Node, ask: Callable, env) -> list:
    """``node`` (of two input-dependent operands) under a custom VJP whose cotangents are
    ``ask(a, b, y, g, pullback)``, or the plain gradient where that returns None."""

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
        grads = ask(a, b, y, g, pullback)
        return tuple(pullback(g) if grads is None else grads)

    place.defvjp(fwd, bwd)
    return [place(env[node.ins[0]], env[node.ins[1]])]


def _plan(program: Program, site_map: SiteMap, rules) -> dict[int, tuple]:
    by_name = {s.name: s for s in site_map.sites}
    plan: dict[int, tuple] = {}
    for i, name in site_map.node_names.items():
        node = program.nodes[i]
        site = by_name.get(name) or Site(name, (), node.outs and program.avals[node.outs[0]].dtype, "linear", node.prim)
        if pool_op(node) is not None:
            rule = _pick(rules, site, "pool")
            if rule is not None:
                chain = site_map.groups[i]
                for j in chain[:-1]:
                    plan[j] = ("skip",)
                plan[chain[-1]] = ("pool", rule, chain, pool_op(node))
        elif i in site_map.groups:
            rule = _pick(rules, site, "linear")
            if rule is not None:
                chain = site_map.groups[i]
                if not _foldable(program, chain):
                    chain = chain[:1]
                for j in chain[:-1]:
                    plan[j] = ("skip",)
                plan[chain[-1]] = ("linear", rule, chain, name)
        elif node.activation is not None:
            rule = _pick(rules, site, "activation")
            if rule is not None:
                plan[i] = ("activation", rule)
        elif node.prim == "add":
            rule = _pick(rules, site, "add")
            if rule is not None:
                plan[i] = ("add", rule)
        elif node.prim in NORMALIZERS:
            rule = _pick(rules, site, "normalizer")
            if rule is not None:
                plan[i] = ("normalizer", rule)
        elif node.prim in PRODUCTS:
            rule = _pick(rules, site, "product")
            if rule is not None:
                plan[i] = ("product", rule)
    return plan


def rewrite_backward(f: Callable, rules) -> Callable:
    """`f` with identical forward values and a VJP that follows `rules`.

    Args:
      f: a model function, batch first.
      rules: one rule object applied everywhere, or a sequence of ``(selector, rule)`` pairs
        (first match wins; the selector is matched against the place's site name). A rule may
        define any of ``linear(layer: LinearLayer, x, g) -> gx``,
        ``activation(op, x, y, g) -> gx``, ``pool(op, x, y, g, pullback) -> gx`` (``op`` is
        ``"max_pool"``, ``"avg_pool"`` or ``"mean"``; ``y`` is the pooled value, after an
        average's division; ``pullback(c)`` is the plain gradient for ``x`` of a cotangent
        ``c`` of ``y``), ``add(a, b, y, g) -> (ga, gb)``, ``normalizer(op, x, y, g) -> gx``
        (``op`` is ``"rsqrt"`` or ``"sqrt"`` of an input-dependent ``x``, the scale of a
        LayerNorm) and ``product(op, a, b, y, g, pullback) -> (ga, gb)`` (``op`` is ``"mul"``
        or ``"matmul"``; ``pullback(c)`` is the plain gradient pair); returning ``None`` or
        lacking the method means the plain gradient there. Rules see whole batches.

    Returns:
      ``g`` with ``g(x) == f(x)`` whose ``jax.vjp``/``jax.grad`` use the rules.

    Example (guided backprop: pass only positive gradients through active ReLUs):
      >>> import jax, jax.numpy as jnp, jaxplain as jp
      >>> class Guided:
      ...     def activation(self, op, x, y, g):
      ...         return g * (x > 0) * (g > 0)
      >>> f = lambda x: jax.nn.relu(x * jnp.array([1.0, -1.0])) @ jnp.array([[1.0], [-2.0]])
      >>> jax.grad(lambda x: jp.rewrite_backward(f, Guided())(x).sum())(jnp.array([[1.0, -1.0]]))
      Array([[ 1., -0.]], dtype=float32)
    """

    if isinstance(rules, Sequence) and not isinstance(rules, str):
        rules = tuple((selector_key(e[0]), e[1]) if isinstance(e, tuple) and len(e) == 2 else e
                      for e in rules)
    return compiled(_rewritten, f, rules)


def _rewritten(f: Callable, rules, x):
    program, site_map = program_of(f, x, unrolled=True)  # rules apply inside loops too
    plan = _plan(program, site_map, rules)

    def replace(i, node, env):
        entry = plan.get(i)
        if entry is None:
            return None
        kind = entry[0]
        if kind == "skip":  # inside a linear group: computed at the group's last node
            return [None] * len(node.outs)
        if kind == "linear":
            _, rule, chain, name = entry
            return _linear_place(program, chain, name, rule, env)
        if kind == "activation":
            return _activation_place(program, node, entry[1], env)
        if kind == "pool":
            _, rule, chain, op = entry
            return _pool_place(program, chain, op, rule, env)
        if kind == "normalizer":
            return _normalizer_place(node, entry[1], env)
        rule = entry[1]
        if kind == "product":
            op = PRODUCTS[node.prim]
            return _two_operand_place(node, lambda a, b, y, g, pb: rule.product(op, a, b, y, g, pb), env)
        return _two_operand_place(node, lambda a, b, y, g, pb: rule.add(a, b, y, g), env)

    return run(program, x, replace=replace)[0]
