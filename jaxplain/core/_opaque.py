"""Opaque nodes: input-dependent parts of a program that keep their own backward pass.

A loop over the unroll budget, a while_loop, a lax.cond on a traced predicate, or a custom
derivative that is no activation stays one node when rewrite_backward places its rules. This
module finds such nodes, tells which kinds of places (rule methods) they hold, and words the
warnings and errors that say how to let the rules in.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxplain.core import _program
from jaxplain.core._user_line import INTERNAL, user_stacklevel
from jaxplain.core._program import Node, Program
from jaxplain.core._sites import _SCATTER_ADDS, NORMALIZERS, PRODUCTS, SUMS, Site, SiteMap

_CONVS = frozenset({"dot_general", "conv_general_dilated"})
_POOLS = frozenset({"reduce_window_max", "reduce_window_sum", "reduce_window", "reduce_max"})
# Elementwise nonlinearities that are no recognised activation (the arithmetic of xlogy's
# custom_jvp, a user's custom_jvp of jnp.log1p(jnp.exp(z))): rules with an activation method
# would take them apart, so an opaque node holding one counts as holding an activation place.
# A div counts only by an input-dependent divisor, a select_n only on an input-dependent
# predicate.
_NONLINEAR = frozenset({
    "integer_pow", "pow", "square", "exp", "exp2", "log", "log1p", "expm1", "sin", "cos", "tan",
    "asin", "acos", "atan", "atan2", "sinh", "cosh", "asinh", "acosh", "atanh", "sqrt", "rsqrt",
    "cbrt", "abs", "erf", "erfc", "erf_inv", "lgamma", "digamma", "max", "min", "clamp", "rem",
    "div", "select_n"})
_CUSTOM_FIX = (
    "write the layer without the custom derivative (keep a trick such as a gradient clip or "
    "reversal in a function of its own, outside the layer); a custom derivative of one "
    "activation applied to its input (jnp.tanh, a jax.nn activation, jnp.logaddexp(z, 0)) is "
    "taken for that activation")
# How a warning or an error names an opaque node: what it is, what its backward pass is, and
# how to let the rules in.
OPAQUE_TEXT = {
    "custom_vjp_call": (
        "the function with a custom derivative (jax.custom_vjp)", "its custom rule", _CUSTOM_FIX),
    "custom_jvp_call": (
        "the function with a custom derivative (jax.custom_jvp)", "its custom rule", _CUSTOM_FIX),
    "cond": (
        "the lax.cond", "the plain gradient of the branch taken",
        "for a constant predicate (a configuration switch) choose the branch with a Python "
        "if; otherwise compute both branches and pick with jnp.where"),
    "while": (
        "the while_loop", "the plain one",
        "write the loop as a lax.scan or a fori_loop with static bounds, which are unrolled "
        "within jaxplain.core.UNROLL_BUDGET"),
    "scan": (
        "the loop over jaxplain.core.UNROLL_BUDGET", "the plain gradient",
        "shorten it: a loop is unrolled, and the rules act at every step, when its steps "
        "hold at most jaxplain.core.UNROLL_BUDGET equations in all"),
}


def _places_in(eqn, flags: list) -> set[str]:
    """The kinds of places (rule methods) that `eqn`, whose operands `flags` marks as
    input-dependent, is or holds: an upper bound (a mean or a normalisation's statistic counts
    as a sum and a pool), exact for linear layers, activations, adds and products."""
    name = eqn.primitive.name
    if _program._activation_of(eqn) is not None:
        return {"activation"}
    if name in ("scan", "while"):
        return _loop_places(eqn, flags)
    subs = list(_program._sub_jaxprs(eqn.params))
    if subs:  # calls, custom derivatives, cond branches: their inputs are the last operands
        return set().union(*(_jaxpr_places(sub, flags[len(flags) - len(sub.invars):])[0]
                             for sub in subs))
    both = sum(flags) == 2
    if name in _CONVS:
        return {"product" if both else "linear"}
    if name in _POOLS:
        return {"pool"}
    if name in SUMS or name in _SCATTER_ADDS:
        return {"sum", "pool"} if name == "reduce_sum" else {"sum"}  # a mean is a reduce_sum
    if name in NORMALIZERS:
        return {"normalizer"}
    if _nonlinear(eqn, flags):
        return {"activation"}
    if both and name == "add":
        return {"add"}
    return {"product"} if both and name in PRODUCTS else set()


def _nonlinear(eqn, flags: list) -> bool:
    """True when `eqn` applies an elementwise nonlinearity (`_NONLINEAR`) to its input-dependent
    operands (`flags`), with a floating result."""
    name = eqn.primitive.name
    if name not in _NONLINEAR or not jnp.issubdtype(eqn.outvars[0].aval.dtype, jnp.inexact):
        return False
    return flags[1] if name == "div" else flags[0] if name == "select_n" else any(flags)


def _jaxpr_places(jaxpr, flags: list) -> tuple[set[str], list]:
    """``(kinds of places, which outputs depend on the input)`` of `jaxpr` whose inputs `flags`
    marks as input-dependent."""
    live = {v for v, on in zip(jaxpr.invars, flags) if on}
    kinds: set[str] = set()
    for eqn in jaxpr.eqns:
        on = [isinstance(v, jax.extend.core.Var) and v in live for v in eqn.invars]
        if any(on):
            live.update(eqn.outvars)
            kinds |= _places_in(eqn, on)
    return kinds, [isinstance(v, jax.extend.core.Var) and v in live for v in jaxpr.outvars]


def _loop_places(eqn, flags: list) -> set[str]:
    """`_places_in` a scan or a while_loop: the carries that come to depend on the input do so
    from the first step on."""
    if eqn.primitive.name == "scan":
        body, start = eqn.params["jaxpr"].jaxpr, eqn.params["num_consts"]
        n = eqn.params["num_carry"]
    else:  # operands: the condition's constants, the body's, then the carries
        flags = flags[eqn.params["cond_nconsts"]:]
        start = eqn.params["body_nconsts"]
        body, n = eqn.params["body_jaxpr"].jaxpr, len(flags) - start
    while True:
        kinds, outs = _jaxpr_places(body, flags)
        carry = [a or b for a, b in zip(flags[start:start + n], outs[:n])]
        if carry == flags[start:start + n]:
            return kinds
        flags = flags[:start] + carry + flags[start + n:]


def opaque_nodes(program: Program, site_map: SiteMap) -> list[tuple[Node, Site]]:
    """The input-dependent nodes that keep their own backward pass (loops over the unroll
    budget, while_loops, conds, custom derivatives that are no activation), with the site that
    rules see for each: its scope below the root, followed by the one scope its body has
    (``cell``), or for a loop without one ``scan``; else named by its kind (``cond``)."""
    found = []
    for node in program.nodes:
        if (node.prim not in _program._OPAQUE or node.activation is not None
                or not any(isinstance(r, int) and r in program.depends for r in node.ins)):
            continue
        heads = {_program._common_scope(sub) for sub in _program._sub_jaxprs(node.eqn.params)}
        heads.discard(None)
        head = heads.pop() if len(heads) == 1 else None
        root = len(site_map.root) if node.stack[:len(site_map.root)] == site_map.root else 0
        stack = node.stack[root:]
        if node.prim == "scan":
            stack += (head or _program._LOOP_SCOPE,)
        elif head is not None:
            stack += (head,)
        name = "/".join(stack) or node.prim.removesuffix("_call")
        found.append((node, Site(name, (), program.avals[node.outs[0]].dtype, "module", node.prim)))
    return found


def warn_opaque(program: Program, site_map: SiteMap,
                has_method: Callable[[Site, str], bool]) -> None:
    """Warn for each node of `opaque_nodes` that holds places the rules have methods for
    (``has_method(site, kind)``): its backward pass is its own, so the rules' sums do not hold
    across it. An elementwise nonlinearity that is no recognised activation counts as an
    activation place (a custom_jvp of ``xlogy``), even with an exact derivative: rules such as
    DeepLIFT's rescale and LRP's pass do not use the derivative."""
    for node, site in opaque_nodes(program, site_map):
        flags = [isinstance(r, int) and r in program.depends for r in node.ins]
        kinds = sorted(k for k in _places_in(node.eqn, flags) if has_method(site, k))
        if not kinds:
            continue
        methods = (f"so the rules' {', '.join(kinds)} methods are not applied inside it: its "
                   f"backward pass is")
        sums = ("sums such as LRP's conservation or DeepLIFT's summation-to-delta do not hold "
                "there")
        if node.prim == "scan":
            body = node.eqn.params["jaxpr"].jaxpr
            size = node.eqn.params["length"] * _program._size(body)
            message = (f"the loop '{site.name}' ({node.eqn.params['length']} steps, {size} "
                       f"equations in all) is over jaxplain.core.UNROLL_BUDGET "
                       f"({_program.UNROLL_BUDGET}) and stays one node, {methods} the plain "
                       f"gradient, and {sums}.")
        else:
            what, how, fix = OPAQUE_TEXT[node.prim]
            message = (f"{what} '{site.name}'{_called_at(node)} stays one node, {methods} {how}, "
                       f"and {sums}. To have the rules act there, {fix}.")
        warnings.warn(f"rewrite_backward: {message}", UserWarning, stacklevel=user_stacklevel())


def _called_at(node: Node) -> str:
    """`` (called at file.py:12)``: the user's line that made `node`, or "" when unknown."""
    frames = getattr(getattr(node.eqn.source_info, "traceback", None), "frames", ())
    frame = next((fr for fr in frames if not fr.file_name.startswith(INTERNAL)), None)
    if frame is None:
        return ""
    return f" (called at {os.path.basename(frame.file_name)}:{frame.line_num})"
