"""Re-run a function from its jaxpr with some equations replaced: the machinery of the CPU
rewrites (:mod:`jaxplain.core._layout`, :mod:`jaxplain.core._pools`).

A rewrite maps a primitive name to ``rewrite(eqn, *inputs) -> outputs or None``; ``None`` keeps
the equation as it is. Nested ``jit`` / ``closed_call`` / ``checkpoint`` bodies are evaluated
inline and ``cond`` branches are re-traced, so their equations are rewritten too; the bodies of
loops and custom derivatives are bound unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import jax
import jax.extend

# Call primitives whose body is evaluated inline (their meaning is "run this jaxpr").
_INLINE = frozenset({"jit", "pjit", "closed_call", "core_call", "remat2", "checkpoint"})

Rewrite = Callable[..., "list | None"]


def _bind(eqn, ins) -> list:
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns = ()
    if isinstance(params, tuple):  # older JAX: (subfuns, params)
        subfuns, params = params
    out = eqn.primitive.bind(*subfuns, *ins, **params)
    return out if eqn.primitive.multiple_results else [out]


def _eval(jaxpr, consts, args, rewrites: Mapping[str, Rewrite]) -> list:
    env = {}

    def read(v):
        return v.val if isinstance(v, jax.extend.core.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        outs = rewrites[name](eqn, *ins) if name in rewrites else None
        if outs is None and name == "cond":  # e.g. the per-platform branches of another rewrite
            branches = [functools.partial(_eval_closed, b, rewrites=rewrites)
                        for b in eqn.params["branches"]]
            outs = jax.lax.switch(ins[0], branches, *ins[1:])
        if outs is None and name in _INLINE:
            inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
            outs = _eval_closed(inner, *ins, rewrites=rewrites)
        if outs is None:
            outs = _bind(eqn, ins)
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def _eval_closed(jaxpr, *args, rewrites: Mapping[str, Rewrite]) -> list:
    """:func:`_eval` of a Jaxpr or ClosedJaxpr."""
    if isinstance(jaxpr, jax.extend.core.ClosedJaxpr):
        return _eval(jaxpr.jaxpr, jaxpr.consts, args, rewrites)
    return _eval(jaxpr, (), args, rewrites)


def reinterpret(fn: Callable, rewrites: Mapping[str, Rewrite], *args):
    """``fn(*args)`` computed from its jaxpr with `rewrites` applied (same output pytree)."""
    flat, tree = jax.tree_util.tree_flatten(args)
    closed, shapes = jax.make_jaxpr(lambda *a: fn(*jax.tree_util.tree_unflatten(tree, a)),
                                    return_shape=True)(*flat)
    outs = _eval(closed.jaxpr, closed.consts, flat, rewrites)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shapes), outs)


def on_cpu(fn: Callable, rewrites: Mapping[str, Rewrite]) -> Callable:
    """``fn`` reinterpreted with `rewrites` when JAX's default backend is the CPU, else ``fn``
    as it is (GPU and TPU programs are unchanged).

    The choice is made when ``fn`` is traced, not per platform inside the program
    (``jax.lax.platform_dependent``): such a branch is not free under differentiation. The
    gradient of integrated gradients with respect to a small CNN's weights (training through an
    explanation) took 60 ms through one, 6 ms with the choice made up front (10 ms without the
    rewrites). A CPU computation on a machine whose default backend is a GPU runs ``fn`` as it
    is: the same values, without the CPU speed-ups.
    """

    def wrapped(*args):
        if jax.default_backend() != "cpu":
            return fn(*args)
        return reinterpret(fn, rewrites, *args)

    return wrapped
