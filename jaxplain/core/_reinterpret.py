"""Re-run a function from its jaxpr with some equations replaced: the machinery of the CPU
rewrites (:mod:`jaxplain.core._layout`, :mod:`jaxplain.core._pools`), and :func:`bind`, which
applies one equation of a jaxpr to new operands (the kernel's programs re-run theirs with it).

A rewrite maps a primitive name to ``rewrite(eqn, *inputs) -> outputs or None``; ``None`` keeps
the equation as it is. Nested ``jit`` / ``closed_call`` / ``checkpoint`` bodies are evaluated
inline and ``cond`` branches are re-traced, so their equations are rewritten too; the bodies of
loops and custom derivatives are bound unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import jax.extend


# Call primitives whose body is evaluated inline (their meaning is "run this jaxpr").
_INLINE = frozenset({"jit", "pjit", "closed_call", "core_call", "remat2", "checkpoint"})

Rewrite = Callable[..., "list | None"]


def _varying(value) -> frozenset:
    """The manual mesh axes (of an enclosing `jax.shard_map`) along which `value` varies."""
    aval = jax.typeof(value)
    mat = getattr(aval, "mat", None)  # jax 0.10: aval.mat.varying; earlier: aval.vma
    return frozenset(getattr(mat, "varying", None) or getattr(aval, "vma", None) or ())


def _vary(values, axes: frozenset, varying=None) -> list:
    """`values` cast (a no-op cast, `jax.lax.pcast(..., to="varying")`) to vary along `axes`."""
    varying = [_varying(v) for v in values] if varying is None else varying
    if all(v >= axes for v in varying):
        return list(values)
    # A jitted function traced again inside a shard_map may run under an empty abstract mesh
    # (jit keeps the context of its first trace): cast under the mesh of a varying value then.
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        mesh = next(jax.typeof(a).sharding.mesh for a, v in zip(values, varying) if v)
    with jax.sharding.use_abstract_mesh(mesh):
        return [a if v >= axes else jax.lax.pcast(a, tuple(sorted(axes - v)), to="varying")
                for a, v in zip(values, varying)]


def zeros_varying_like(struct) -> jax.Array:
    """Zeros of `struct`'s shape and dtype (a ``jax.ShapeDtypeStruct`` of ``jax.eval_shape``),
    varying along the `jax.shard_map` axes it varies along: the start of a loop's accumulator
    whose steps add values that vary per device."""
    zeros = jnp.zeros(struct.shape, struct.dtype)
    mat = getattr(struct, "manual_axis_type", None)
    axes = frozenset(getattr(mat, "varying", None) or getattr(struct, "vma", None) or ())
    if not axes:
        return zeros
    mesh = jax.sharding.get_abstract_mesh()
    with jax.sharding.use_abstract_mesh(struct.sharding.mesh if mesh.empty else mesh):
        return jax.lax.pcast(zeros, tuple(sorted(axes)), to="varying")


def match_varying(args) -> tuple[list, frozenset]:
    """`args` made to vary along the same `jax.shard_map` axes, as `jax.lax`'s own wrappers do
    before they bind a primitive (inside a shard_map the input varies per device and a
    closed-over weight does not, and a primitive bound on both is refused), and those axes.
    Outside a shard_map nothing varies and `args` come back as they are, with no cast added."""
    args = list(args)
    varying = [_varying(a) for a in args]
    every = frozenset().union(*varying)
    if not every or all(v == every for v in varying):
        return args, every
    return _vary(args, every, varying), every


def _custom_jvp(eqn, args, every) -> list:
    """A `custom_jvp_call` as a `jax.custom_jvp` whose function and derivative are its jaxprs
    re-run with :func:`bind` (its own jaxprs were traced without the shard_map's axes)."""
    params, n = eqn.params, eqn.params["num_consts"]

    @jax.custom_jvp
    def fn(*a):
        return _vary(_eval_closed(params["call_jaxpr"], *a, rewrites={}), every)

    @fn.defjvp
    def fn_jvp(primals, tangents):
        primals, tangents = primals[n:], tangents[n:]  # constants get no tangent (as JAX's)
        jaxpr, consts, zeros = params["jvp_jaxpr_fun"].call_wrapped(*[False] * len(tangents))
        out = _vary(_eval(jaxpr, consts, [*primals, *tangents], {}), every)
        ys, nonzero = out[:len(zeros)], iter(out[len(zeros):])
        return ys, [jax.numpy.zeros_like(y) if z else next(nonzero) for y, z in zip(ys, zeros)]

    return fn(*args)


def _scan(eqn, args, every) -> list:
    """A `scan` as `jax.lax.scan` of its body re-run with :func:`bind`."""
    params = eqn.params
    n_consts, n_carry, body = params["num_consts"], params["num_carry"], params["jaxpr"]
    args = _vary(args, every)  # so that the carry keeps one type
    consts, carry, xs = args[:n_consts], args[n_consts:n_consts + n_carry], args[n_consts + n_carry:]

    def step(c, x):
        out = _vary(_eval(body.jaxpr, body.consts, [*consts, *c, *x], {}), every)
        return out[:n_carry], out[n_carry:]

    carry, ys = jax.lax.scan(step, carry, xs, length=params["length"], reverse=params["reverse"],
                             unroll=params["unroll"])
    return [*carry, *ys]


def _while(eqn, args, every) -> list:
    """A `while` as `jax.lax.while_loop` of its jaxprs re-run with :func:`bind`."""
    params = eqn.params
    n_cond, n_body = params["cond_nconsts"], params["body_nconsts"]
    args = _vary(args, every)
    cond_consts, body_consts, init = args[:n_cond], args[n_cond:n_cond + n_body], args[n_cond + n_body:]
    return list(jax.lax.while_loop(
        lambda c: _eval_closed(params["cond_jaxpr"], *cond_consts, *c, rewrites={})[0],
        lambda c: _vary(_eval_closed(params["body_jaxpr"], *body_consts, *c, rewrites={}), every),
        init))


def _cond(eqn, args, every) -> list:
    """A `cond` as `jax.lax.switch` over its branches re-run with :func:`bind`."""
    branches = [lambda *a, b=b: _vary(_eval_closed(b, *a, rewrites={}), every)
                for b in eqn.params["branches"]]
    return list(jax.lax.switch(args[0], branches, *args[1:]))


# Primitives whose jaxprs were traced without a shard_map's axes: inside one they are re-run
# through the public wrappers, which type their bodies for it (JAX would refuse them as bound).
_VARYING = {"custom_jvp_call": _custom_jvp, "scan": _scan, "while": _while, "cond": _cond}


def _has_body(eqn) -> bool:
    return any(isinstance(v, (jax.extend.core.ClosedJaxpr, jax.extend.core.Jaxpr))
               for value in eqn.params.values()
               for v in (value if isinstance(value, (tuple, list)) else (value,)))


def bind(eqn, args) -> list:
    """``eqn``'s primitive applied to `args` (its outputs as a list), as `jax.lax` would: inside
    a `jax.shard_map`, operands that vary per device and operands that do not (a closed-over
    weight) are made to agree first, and loops, branches and custom derivatives are re-run
    through their public wrappers."""
    name = eqn.primitive.name
    if name in _VARYING or _has_body(eqn):  # its body casts what it needs (if traced in the
        every = frozenset().union(*map(_varying, args))  # shard_map), or _VARYING re-runs it
        if every and name in _VARYING:
            return _VARYING[name](eqn, list(args), every)
    else:
        args, every = match_varying(args)
        if every and name == "pvary":  # a cast traced in a shard_map, on a value that may
            return _vary(args, frozenset(eqn.params["axes"]))  # vary already
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns = ()
    if isinstance(params, tuple):  # older JAX: (subfuns, params)
        subfuns, params = params
    out = eqn.primitive.bind(*subfuns, *args, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _eval(jaxpr, consts, args, rewrites: Mapping[str, Rewrite]) -> list:
    env = {}

    def read(v):
        return v.val if isinstance(v, jax.extend.core.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        outs = rewrites[name](eqn, *match_varying(ins)[0]) if name in rewrites else None
        if outs is None and name == "cond":  # e.g. the per-platform branches of another rewrite
            branches = [functools.partial(_eval_closed, b, rewrites=rewrites)
                        for b in eqn.params["branches"]]
            outs = jax.lax.switch(ins[0], branches, *ins[1:])
        if outs is None and name in _INLINE:
            inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
            outs = _eval_closed(inner, *ins, rewrites=rewrites)
        if outs is None:
            outs = bind(eqn, ins)
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
