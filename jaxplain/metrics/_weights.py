"""A model's weights as named layers, and new values for them (the randomization checks).

The weights of any model kind are seen the same way: the model's floating-point array leaves,
each with its path below the root (``conv1/kernel`` in Linen params, ``layers/0/weight`` in an
Equinox module, ``layers/0/kernel`` in an NNX module's ``nnx.Param`` state). State that is not
a parameter is never re-drawn: Linen's collections other than ``params`` (``batch_stats``),
NNX's variables other than ``nnx.Param`` (``BatchStat``, RNG state), and every ``eqx.nn.State``
(and ``StateIndex``) held by an Equinox module. A layer is a path prefix; the model is rebuilt
from new leaves (Linen: new variables; Equinox: the module's pytree unflattened, as
``eqx.tree_at`` does; NNX: ``nnx.merge`` of the graph definition and the new state) and
explained through :func:`jaxplain.as_function`, with the call's keyword arguments
``apply_kwargs``.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

KINDS = {"linen": "a Flax Linen module", "nnx": "a Flax NNX module",
          "equinox": "an Equinox module"}


def flax_params(variables: Any, name: str = "variables") -> Any:
    if not isinstance(variables, dict) and not hasattr(variables, "keys"):
        raise TypeError(f"{name} must be a Flax variables dict, got {type(variables).__name__}")
    if "params" not in variables:
        raise ValueError(f"{name} must hold a 'params' collection, got keys {list(variables)}")
    return variables["params"]


def _part(key: Any) -> Any:
    for attr in ("key", "idx", "name"):  # DictKey, SequenceKey, GetAttrKey
        if hasattr(key, attr):
            return getattr(key, attr)
    return str(key)


@dataclasses.dataclass(frozen=True)
class Weights:
    """A model's leaves, with the path of each leaf that is a weight (a floating-point array;
    ``None`` for other leaves), and how to make the model's function from new leaves."""

    kind: str
    leaves: tuple
    paths: tuple[tuple[Any, ...] | None, ...]
    rebuild: Callable[[list], Callable]


def model_kind(model: Any) -> str:
    from jaxplain.core._adapters import _kind

    kind = _kind(model)
    if kind not in KINDS:
        raise TypeError(
            "model must be a Flax Linen module (with its variables), a Flax NNX module or an "
            f"Equinox module, got {type(model).__name__}: a plain function has no weights to "
            "randomize")
    return kind


def model_weights(model: Any, variables: Any, apply_kwargs: dict[str, Any], *,
             name: str = "model") -> Weights:
    """The weights of `model` (with `variables` for Linen); `name` is the argument's name.

    Only parameters are weights: Linen's ``params``, NNX's ``nnx.Param``s, and for Equinox the
    floating-point arrays outside any ``eqx.nn.State`` (which is kept whole, as one leaf)."""
    from jaxplain.core import as_function

    kind, wrap = model_kind(model), None
    is_leaf = None
    if kind == "linen":
        tree = flax_params(variables, "variables" if name == "model" else name)
    elif variables is not None:
        raise ValueError(f"variables must be None for {KINDS[kind]} (its weights are its "
                         f"own fields), got {type(variables).__name__}")
    elif kind == "equinox":
        import equinox as eqx
        from jaxplain.core._adapters import equinox_unwrapped

        tree, wrap, _ = equinox_unwrapped(model)  # below eqx.filter_jit / filter_vmap
        state_types = (eqx.nn.State, eqx.nn.StateIndex)  # running statistics: kept whole
        is_leaf = lambda node: isinstance(node, state_types)  # noqa: E731
    else:
        from flax import nnx

        graphdef, tree, rest = nnx.split(model, nnx.Param, ...)
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    paths = []
    for path, leaf in flat:
        floating = hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact)
        parts = tuple(_part(k) for k in path)
        if kind == "nnx" and parts[-1:] == ("value",):  # a Variable's value
            parts = parts[:-1]
        paths.append(parts if floating and parts else None)
    leaves = tuple(leaf for _, leaf in flat)

    if kind == "linen":
        def rebuild(new):
            return as_function(model, {**variables, "params": treedef.unflatten(new)},
                               **apply_kwargs)
    elif kind == "equinox":
        def rebuild(new):
            return as_function(wrap(treedef.unflatten(new)), **apply_kwargs)
    else:
        def rebuild(new):
            return as_function(nnx.merge(graphdef, treedef.unflatten(new), rest), **apply_kwargs)
    return Weights(kind, leaves, tuple(paths), rebuild)


def _name(parts: tuple[Any, ...]) -> str:
    return "/".join(str(p) for p in parts)


def _group(paths: tuple, members: Sequence[int], depth: int) -> dict[tuple, list[int]]:
    """``{layer path: indices}``, a weight's layer being its path up to the component at
    `depth`, with the list indices that follow (``layers/0`` for ``layers/0/weight``: a list
    of layers is not one layer)."""
    found: dict[tuple, list[int]] = {}
    for i in members:
        parts, k = paths[i], depth + 1
        while k < len(parts) - 1 and isinstance(parts[k], int) and not isinstance(parts[k], bool):
            k += 1
        found.setdefault(parts[:k], []).append(i)
    return found


def _default_layers(paths: tuple) -> dict[str, tuple[int, ...]]:
    """The top-level entries that hold weights; while there is only one and it holds
    sub-layers (a wrapper such as ``Classifier(model, state)``), that entry's children."""
    groups = _group(paths, [i for i, p in enumerate(paths) if p is not None], 0)
    while len(groups) == 1:
        (prefix, members), = groups.items()
        depths = [len(paths[i]) - len(prefix) for i in members]
        if min(depths) < 1 or max(depths) < 2:  # a layer's own weights (kernel, bias)
            break
        groups = _group(paths, members, len(prefix))
    return {_name(prefix): tuple(members) for prefix, members in groups.items()}


def layer_leaves(weights: Weights, layers: Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    """``{layer name: indices of its weight leaves}``; default: :func:`_default_layers`."""
    found = _default_layers(weights.paths)
    valid = tuple(found)
    where = ("variables['params']" if weights.kind == "linen"
             else f"the fields of {KINDS[weights.kind]}")
    if not valid:
        raise ValueError(f"model has no weights to randomize: no floating-point arrays in {where}")
    if layers is None:
        return found
    if isinstance(layers, str):
        layers = (layers,)
    out = {}
    for layer in layers:
        if not isinstance(layer, str):
            raise TypeError(f"layers must be a sequence of names (str) from {valid}, got {layer!r}")
        want = tuple(layer.split("/"))
        out[layer] = tuple(i for i, parts in enumerate(weights.paths) if parts is not None
                           and tuple(map(str, parts[:len(want)])) == want)
    bad = [name for name, idx in out.items() if not idx]
    if bad or not out:
        raise ValueError(f"layers must be names from {where} {valid} (or paths below them, such "
                         f"as '{valid[0]}/...'), got {tuple(layers)}; "
                         f"unknown: {tuple(bad)}")
    return out


def layer_order(weights: Weights, x, layers: dict[str, tuple[int, ...]]) -> tuple[str, ...]:
    """The names of `layers` (``{name: indices of its weight leaves}``) in the order the model
    first uses their weights, input to output.

    A restored checkpoint may hold the params sorted by name, an Equinox module lists its
    fields in declaration order, and a bare parameter (a ViT's positional embedding, a CLS
    token) has no layer call of its own, so the order comes from one abstract trace of the
    model as a function of its weights (no FLOPs): a layer's place is the first equation where
    one of its leaves, or a value computed from its leaves alone (a reshape, a cast, a
    weight-tied transpose), meets a value computed from `x` (:func:`_first_meetings`). A layer
    called in a loop (stacked weights) takes its first step's place; a weight-tied one, its
    first use. Ties keep the order given. A layer whose weights never meet `x` (an unused
    parameter) cannot change an explanation of `x`: it comes last, in the order given, with a
    warning.

    Args:
      weights: the model's weights (:func:`model_weights`).
      x: an example batch, ``Float[Array, "batch *feature"]`` (only its shape and dtype are
        used).
      layers: ``{layer name: indices into weights.leaves}`` (:func:`layer_leaves`).
    """
    chosen = sorted({j for idx in layers.values() for j in idx})

    def model(ws, x1):
        leaves = list(weights.leaves)
        for j, w in zip(chosen, ws):
            leaves[j] = w
        return weights.rebuild(leaves)(x1)

    spec = [jax.ShapeDtypeStruct(weights.leaves[j].shape, weights.leaves[j].dtype)
            for j in chosen]
    closed = jax.make_jaxpr(model)(spec, jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype))
    flows = [(False, frozenset({j})) for j in chosen]
    flows += [_DATA] * (len(closed.jaxpr.invars) - len(chosen))  # x's
    met: dict[int, int] = {}
    _first_meetings(closed.jaxpr, flows, itertools.count(), met)
    given = list(layers)
    used = {name: min(met[j] for j in idx if j in met) for name, idx in layers.items()
            if any(j in met for j in idx)}
    unused = tuple(name for name in given if name not in used)
    if unused:
        warnings.warn(f"randomization_check: the model never uses the weights of {unused} on x "
                      "(unused parameters): re-drawing them cannot change the explanation; "
                      "they are ordered last (re-drawn first in cascading mode)", stacklevel=3)
    return tuple(sorted(used, key=lambda name: (used[name], given.index(name)))) + unused


# The flow of a value in the trace: (computed from x, the weight leaves it is computed from
# alone, if not from x).
_Flow = tuple[bool, frozenset]
_DATA: _Flow = (True, frozenset())
_CLEAN: _Flow = (False, frozenset())


def _join(flows: Sequence[_Flow]) -> _Flow:
    return (any(d for d, _ in flows), frozenset().union(*(w for _, w in flows)))


def _first_meetings(jaxpr, flows: Sequence[_Flow], clock, met: dict[int, int]) -> list[_Flow]:
    """Walk `jaxpr` (its invars' `flows`) in program order, into calls and loops; ``met[j]``
    becomes the tick of `clock` at the first equation where leaf `j` meets a value computed
    from x. Returns the flows of the outvars."""
    from jax.extend.core import Literal

    env = dict(zip(jaxpr.invars, flows))

    def read(v):
        return _CLEAN if isinstance(v, Literal) else env.get(v, _CLEAN)  # a const: clean

    for eqn in jaxpr.eqns:
        outs = _equation(eqn, [read(v) for v in eqn.invars], clock, met)
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def _open(body):
    """The Jaxpr of a ClosedJaxpr (a jit's, a scan's body) or of an open one (a checkpoint's)."""
    return getattr(body, "jaxpr", body)


def _loop(body, consts: list[_Flow], carry: list[_Flow], rest: list[_Flow], clock,
          met) -> list[_Flow]:
    """The flows out of a loop `body` (invars: consts, carry, rest; outvars: the carry first),
    its carry's flows joined with what the body makes of them until they are stable."""
    while True:
        outs = _first_meetings(body, consts + carry + rest, clock, met)
        joined = [_join((c, o)) for c, o in zip(carry, outs)]
        if joined == carry:
            return outs
        carry = joined


def _equation(eqn, ins: list[_Flow], clock, met: dict[int, int]) -> list[_Flow]:
    """The flows out of one equation (a call, a loop, a branch, or a primitive)."""
    name, params = eqn.primitive.name, eqn.params
    if name == "scan":
        k, c = params["num_consts"], params["num_carry"]
        return _loop(_open(params["jaxpr"]), ins[:k], ins[k:k + c], ins[k + c:], clock, met)
    if name == "while":
        k, b = params["cond_nconsts"], params["body_nconsts"]
        carry = _loop(_open(params["body_jaxpr"]), ins[k:k + b], ins[k + b:], [], clock, met)
        _first_meetings(_open(params["cond_jaxpr"]), ins[:k] + carry, clock, met)
        return carry
    if name == "cond":
        outs = [_first_meetings(_open(b), ins[1:], clock, met) for b in params["branches"]]
        joined = [_join(flows) for flows in zip(*outs)]
        return [_meet([ins[0], f], clock, met) for f in joined] if ins[0][0] else joined
    bodies = [_open(p) for p in params.values() if hasattr(_open(p), "eqns")]
    if (len(bodies) == 1 and len(bodies[0].invars) == len(ins)
            and len(bodies[0].outvars) == len(eqn.outvars)):  # a call: jit, checkpoint, ...
        return _first_meetings(bodies[0], ins, clock, met)
    return [_meet(ins, clock, met)] * len(eqn.outvars)


def _meet(ins: Sequence[_Flow], clock, met: dict[int, int]) -> _Flow:
    """The flow out of a primitive on `ins`; where one is computed from x, the leaves of the
    others meet it now."""
    tick, flow = next(clock), _join(ins)
    if not flow[0]:
        return flow
    for j in flow[1]:
        met.setdefault(j, tick)
    return _DATA


def fresh_leaves(model, weights: Weights, fresh, x, key, stdev, layers,
                  apply_kwargs) -> Callable:
    """``new(name, i) -> [new leaves of layer `name`]``, the `i`-th layer randomized."""
    if stdev is not None:
        if fresh is not None:
            raise ValueError("pass fresh or stdev, not both: fresh gives the new weights, stdev "
                             "draws them from N(0, stdev²)")
        if isinstance(stdev, bool) or not isinstance(stdev, (int, float)) or stdev <= 0:
            raise ValueError(f"stdev must be None or a positive number, got {stdev!r}")

        def gaussian(name, i):
            idx = layers[name]
            keys = jax.random.split(jax.random.fold_in(key, i), len(idx))
            return [float(stdev) * jax.random.normal(k, weights.leaves[j].shape,
                                                     weights.leaves[j].dtype)
                    for k, j in zip(keys, idx)]

        return gaussian
    if fresh is None:
        if weights.kind != "linen":
            raise ValueError(
                f"fresh or stdev is needed for {KINDS[weights.kind]}, which has no "
                "initializer to re-draw from: pass fresh= (the same architecture built with "
                "another key, e.g. Net(key=jax.random.key(1))) or stdev= for N(0, stdev²) "
                "weights")
        if not hasattr(model, "init"):
            raise TypeError("model has no init(); pass fresh= (new variables) or stdev to draw "
                            "Gaussian weights instead")
        from jaxplain.metrics._rebuilt import Uncached, init

        try:  # compiled once per model, its code and shapes: an eager init traces every layer
            fresh = init(model, key, x[:1], apply_kwargs)
        except (jax.errors.JAXTypeError, Uncached):  # a model JAX cannot trace, or whose code
            # has no key: initialized eagerly
            fresh = model.init(key, x[:1], **apply_kwargs)
    if weights.kind == "linen":
        other = model_weights(model, fresh, apply_kwargs, name="fresh")
    else:
        if model_kind(fresh) != weights.kind:
            raise TypeError(f"fresh must be {KINDS[weights.kind]} like model, got "
                            f"{type(fresh).__name__}")
        other = model_weights(fresh, None, apply_kwargs, name="fresh")
    by_path = {p: leaf for p, leaf in zip(other.paths, other.leaves) if p is not None}
    for j in sorted({j for idx in layers.values() for j in idx}):
        path, leaf = weights.paths[j], weights.leaves[j]
        got = by_path.get(path)
        if got is None or got.shape != leaf.shape:
            found = "missing" if got is None else f"of shape {got.shape}"
            raise ValueError(f"fresh must have the architecture of model: its weight "
                             f"{_name(path)} is {found}, expected shape {leaf.shape}")

    def copied(name, i):
        return [jnp.asarray(by_path[weights.paths[j]], weights.leaves[j].dtype)
                for j in layers[name]]

    return copied
