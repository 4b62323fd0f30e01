"""Sites: the named intermediate values of a traced program.

Names come from the model's own structure, read off the name stack of each equation:

* a scope (a Flax Linen module path, a `jax.named_scope`, an attribute path set by the NNX and
  Equinox adapters) is a site of kind ``"module"``; its value is the output of the last equation
  inside it that depends on the input (a scope holding only weight computations is no site).
  A capitalised root element shared by every named equation (a Linen model's class name, e.g.
  ``Net``) is dropped, so ``Net/block1/conv_a`` is the site ``block1/conv_a``.
  A scope entered several times (a ``jax.named_scope`` reused in a loop, a module called
  twice) is one site, the value at the end of the last entry; ``SiteMap.reused`` lists the
  scopes that look so (see `_reused`). A scope with no input-dependent equation of its own
  whose sub-scopes run apart, each entered once, was never entered as one (its children were
  called from outside it: ``a, b = self.shared()`` of an ``eqx.nn.Shared`` tying two layers,
  then ``b(relu(a(x)))``, gives ``shared/pytree/0`` and ``shared/pytree/1``): it is no site.
* activations, residual adds (two input-dependent operands) and pools called directly in a
  scope's body get derived names below that scope: ``relu``, ``relu_1``, ``block1/add``,
  ``avg_pool``; linear layers outside any scope (or directly in the step of a loop whose body
  has no scope, ``scan/0/linear``) get ``linear``/``conv`` names. Numbering follows program
  order, so names are stable for a given model. A ReLU written ``jnp.where(z > 0, z, 0)`` (or
  leaky, ``a * z``) or as a ``jax.custom_vjp`` of ``max(z, 0)`` is a ``relu`` (``leaky_relu``)
  as ``jax.nn.relu`` is (see :func:`jaxplain.core._program._where_rectifier`). An add whose
  operand depends on the input only through a ``stop_gradient`` (a straight-through
  estimator's) keeps its site but is no place for rules: that operand is a constant to the
  gradient, as it is to a product. A product with a matrix that the program
  builds from literals along axes other than the channels (``jax.image.resize``'s
  interpolation, see :func:`jaxplain.core._channels.resamples`) is no linear layer: no site,
  and rules give it the plain gradient. Inside an unrolled loop step, numbering
  follows the position in the loop body, the same in every step, so ``rnn/cell/*/add_4`` is
  one quantity; a step where the value is a constant (the recurrent branch at step 0, whose
  initial carry is zero) lacks that name, and the others keep theirs. An activation or add of values
  computed over the whole batch (the ``max(var, 0)`` of a BatchNorm using batch statistics)
  has no batch axis and is no site: per-example methods never pick it. Nor is a value that the
  outputs never use (a branch left dead); the names of the others stay as they are.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import jax.numpy as jnp
import numpy as np

from jaxplain.core._batch import SHARED, _row_axis, batch_axes, mixes_batch
from jaxplain.core._channels import channel_axes, fixed_values, resamples
from jaxplain.core._program import EDIT_MARK, Lit, Node, Program

_LINEAR = {"dot_general": "linear", "conv_general_dilated": "conv"}
_AFFINE_OPS = frozenset({"add", "sub", "mul", "div"})


@dataclasses.dataclass(frozen=True)
class Site:
    """A named intermediate value of a model.

    Attributes:
      name: the site's name, path elements joined by "/" (e.g. ``"block1/conv_a"``).
      shape: the value's shape for the traced batch, batch axis first (a value that ``vmap``
        keeps with the batch elsewhere, e.g. ``(features, batch, tokens)`` inside an Equinox
        layer vmapped over tokens, is presented as the model's code sees it: the value where
        ``vmap`` has moved the batch to the front, or else the value with its batch axis moved
        first).
      dtype: the value's dtype.
      kind: ``"module"``, ``"activation"``, ``"add"``, ``"linear"`` or ``"pool"``.
      op: what computes it: ``"relu"``, ``"tanh"``, ``"conv"``, ``"dense"``, ``"max_pool"``,
        ``"avg_pool"``, ``"add"``, or ``"module"``.
      channel_axis: the axis of the model's own value (batch first) that holds the channels (1
        for an Equinox or PyTorch-style NCHW convolution, -1 for Flax's NHWC), or None when no
        convolution or dense layer makes it. A site with its channels neither first nor last is
        presented channels-last: `shape` and the values that `capture` returns and `intervene`
        edits have them on the last axis (``(n, h, w, c)``), as every per-channel method expects.
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    kind: str
    op: str
    channel_axis: int | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class SiteMap:
    """Sites of a program with the value id that holds each, plus the linear-layer groups."""

    sites: tuple[Site, ...]
    ids: dict  # name -> value id
    node_names: dict  # node index -> derived/own site name (activations, adds, linear groups,
    # square roots of input-dependent values: normalisers)
    groups: dict  # node index of a linear op or a pool -> node indices of it and its affine chain
    root: tuple  # the dropped root scope (e.g. ("Net",) for a Linen model), or ()
    moved: dict  # name -> the permutation that presents its value (batch first, channels
    # last; see Site), for the sites whose value the model keeps in another layout
    pools: dict  # node index of a pool -> its op (see ``pool_op``)
    mixes_batch: bool = False  # an output depends on a value computed over the whole batch
    constant: frozenset = frozenset()  # names that are sites at other steps of a loop but a
    # constant at theirs (``rnn/cell/0/hi`` when the initial carry is zero)
    reused: dict = dataclasses.field(default_factory=dict)  # scope site -> how many times it
    # is entered, where it looks entered more than once (see `_reused`)


def _consumers(program: Program) -> tuple[Counter, dict]:
    """How many times each value id is used (outputs included), and its first consumer node."""
    count: Counter = Counter()
    first: dict = {}
    for j, node in enumerate(program.nodes):
        for r in node.ins:
            if isinstance(r, int):
                count[r] += 1
                first.setdefault(r, j)
    for r in program.output_ids:
        if isinstance(r, int):
            count[r] += 1
    return count, first


def _is_const(program: Program, ref) -> bool:
    return isinstance(ref, Lit) or ref not in program.depends


def affine_chain(program: Program, start: int, consumers: tuple[Counter, dict],
                 same_stack: bool) -> tuple[int, ...]:
    """Indices of `start` and the elementwise affine-by-constant nodes that follow it.

    The chain continues while the current value has one consumer, that consumer is an
    add/sub/mul/div with a constant other operand (mul/div only by a constant on the right for
    div) or a cast between float dtypes (``(h.astype(bf16) @ w).astype(f32) + b``), and the
    result has the same shape (no broadcasting of the batch); shape ops that come back to the
    same shape, with affine ops between them where they only add or drop size-1 axes
    (`_round_trip`), belong to it too, and so do transposes right after a linear op. A cast at
    the end, with no affine op after it, does not. `consumers` is
    ``_consumers(program)``: the use count and the first consumer of each value id.
    """
    count, by_input = consumers
    chain = [start]
    current = program.nodes[start].outs[0]
    while count[current] == 1 and current in by_input:
        j = by_input[current]
        node = program.nodes[j]
        if same_stack and node.stack != program.nodes[start].stack:
            break
        trip = _round_trip(program, j, current, consumers)
        if trip:
            chain += trip
            current = program.nodes[trip[-1]].outs[0]
            continue
        if node.prim == "transpose" and program.nodes[start].prim in _LINEAR and all(
                program.nodes[k].prim == "transpose" for k in chain[1:]):
            chain.append(j)  # ``W @ x`` under vmap: (out, batch), then batch first
            current = node.outs[0]
            continue
        break
    while program.nodes[chain[-1]].prim == "convert_element_type":
        chain.pop()
    return tuple(chain)


def _affine_step(program: Program, node: Node, current: int) -> bool:
    """True when `node` maps the value `current` to one of its shape by an add, sub, mul or div
    with a constant (a div only as ``current / c``), or casts it to another float dtype."""
    if node.prim == "convert_element_type":
        return all(jnp.issubdtype(program.avals[r].dtype, jnp.floating) for r in (current, node.outs[0]))
    if node.prim not in _AFFINE_OPS or len(node.ins) != 2 or node.ins[0] == node.ins[1]:
        return False
    other = node.ins[1] if node.ins[0] == current else node.ins[0]
    if not _is_const(program, other) or node.prim == "div" and node.ins[0] != current:
        return False
    return program.avals[node.outs[0]].shape == program.avals[current].shape


def order_preserving(node: Node) -> bool:
    """True for a reshape, squeeze or expand_dims, or a broadcast that adds size-1 axes: ops
    that keep the values in their row-major order."""
    if node.prim == "broadcast_in_dim":
        dims = list(node.eqn.params["broadcast_dimensions"])
        sizes = {math.prod(v.aval.shape) for v in (*node.eqn.invars, *node.eqn.outvars)}
        return dims == sorted(dims) and len(sizes) == 1
    return node.prim in ("squeeze", "expand_dims") or (
        node.prim == "reshape" and node.eqn.params.get("dimensions") is None)


def _round_trip(program: Program, start: int, current: int,
                consumers: tuple[Counter, dict]) -> list[int]:
    """Indices of the nodes from `start` on, applied to the value `current`, that come back to
    its shape: order-preserving shape ops (e.g. the reshape and squeeze after a convolution
    under ``vmap``: a no-op) and affine ops by constants (`_affine_step`) between them where
    every shape op only adds or drops size-1 axes (a Flax layer on an unbatched input under
    ``vmap`` adds its bias to the ``(n, 1, h, w, c)`` value before the squeeze). A lone affine
    op is a trip of one. [] when they do not come back."""
    count, by_input = consumers
    shape = program.avals[current].shape
    trip, j, affine = [], start, False
    while True:
        node = program.nodes[j]
        if _affine_step(program, node, current):
            affine = True
        elif len(node.ins) != 1 or not order_preserving(node):
            return []
        trip.append(j)
        current = node.outs[0]
        if program.avals[current].shape == shape:
            shaped = [program.nodes[k] for k in trip if program.nodes[k].prim in _SHAPE_OPS - {"convert_element_type"}]
            return trip if not affine or all(_relayout(program, n) for n in shaped) else []
        if count[current] != 1 or current not in by_input:
            return []
        j = by_input[current]


def _relayout(program: Program, node: Node) -> bool:
    """True for a transpose, or an order-preserving shape op that only adds or drops axes of
    size 1: the same values, laid out again (as ``vmap`` does around a layer)."""
    if node.prim == "transpose":
        return True
    if len(node.ins) != 1 or not order_preserving(node):
        return False
    sizes = [[d for d in program.avals[r].shape if d != 1] for r in (node.ins[0], node.outs[0])]
    return sizes[0] == sizes[1]


def _scaled(program: Program, node: Node, current: int) -> bool:
    """True when `node` divides the value `current` by a constant (``h / k``: one number, or one
    per unit, as the window counts of a pool that leaves the padding out) or multiplies it by
    one constant number (``h * (1 / k)``), keeping its shape: an average's scale. A product
    with one constant per unit is a weighting of the units, which keeps its gradient (it
    scales their relevance, see docs/attribution.md)."""
    if node.prim not in ("div", "mul") or len(node.ins) != 2 or current not in node.ins:
        return False
    other = node.ins[1] if node.ins[0] == current else node.ins[0]
    shape = program.avals[current].shape
    if not _is_const(program, other) or program.avals[node.outs[0]].shape != shape:
        return False
    if node.prim == "div":
        return node.ins[0] == current
    return np.size(other.value) == 1 if isinstance(other, Lit) else (
        math.prod(program.avals[other].shape) == 1)


def _pool_chain(program: Program, start: int, consumers: tuple[Counter, dict]) -> tuple[int, ...]:
    """Indices of the pool `start` and what belongs to it: the shape ops after it in its scope
    (``vmap``'s squeeze and transpose around an Equinox pool, which pools a 5-d copy of the
    features; for a max pool or an extremum, transposes and ops that drop size-1 axes, never
    one that adds them, as the next Equinox pool does) and, for a sum pool, its scale
    (`_scaled`: ``/ k`` or ``* (1 / k)`` for the window size k): all of an average. A sum pool
    with no such scale is just ``(start,)``. Ops with a literal operand (the ``max(-inf, m)``
    of ``jnp.max(..., initial=-jnp.inf)``) end a max pool's chain."""
    count, by_input = consumers
    chain, current = [start], program.nodes[start].outs[0]
    summed = program.nodes[start].prim not in ("reduce_window_max", "reduce_max", "reduce_min")
    while count[current] == 1 and current in by_input:
        j = by_input[current]
        node = program.nodes[j]
        if node.stack != program.nodes[start].stack:
            break
        if node.ins == (current,) and len(node.outs) == 1 and (
                summed and order_preserving(node) or _relayout(program, node) and (
                    summed or program.avals[node.outs[0]].ndim <= program.avals[current].ndim)):
            chain.append(j)
            current = node.outs[0]
            continue
        if summed and _scaled(program, node, current):
            return (*chain, j)
        break
    return (start,) if summed else tuple(chain)


# Square roots of input-dependent values: the scales of LayerNorm/RMSNorm (normalisers).
NORMALIZERS = frozenset({"rsqrt", "sqrt"})
# Products of two input-dependent values (attention's q k^T and p v, gates): their rule names.
PRODUCTS = {"mul": "mul", "dot_general": "matmul"}
_SHAPE_OPS = frozenset({"broadcast_in_dim", "reshape", "squeeze", "expand_dims", "convert_element_type"})


def _is_clamp(program: Program, i: int, consumers: tuple[Counter, dict]) -> bool:
    """True when node `i`, a ``max(v, 0)``, only feeds a square root (through reshapes and affine
    ops by constants, e.g. ``rsqrt(max(var, 0) + eps)`` in a LayerNorm): a guard, not an
    activation."""
    count, first = consumers
    current = program.nodes[i].outs[0]
    while count[current] == 1 and current in first:
        node = program.nodes[first[current]]
        if node.prim in NORMALIZERS:
            return True
        others = [r for r in node.ins if r != current]
        if not (node.prim in _SHAPE_OPS or node.prim in _AFFINE_OPS
                and all(_is_const(program, r) for r in others)):
            return False
        current = node.outs[0]
    return False


def _live(program: Program) -> frozenset:
    """Input-dependent ids that depend on the input along some path avoiding every normaliser
    and every ``stop_gradient``: a value that depends on the input only through a LayerNorm's
    scale, or only through a ``stop_gradient``, is not live."""
    live = {program.input_id}
    for node in program.nodes:
        if (node.prim in NORMALIZERS or node.prim == "stop_gradient" or not node.outs
                or node.outs[0] not in program.depends):
            continue
        dependent = [r for r in node.ins if isinstance(r, int) and r in program.depends]
        if not dependent or any(r in live for r in dependent):  # none: an intervention's value
            live.update(node.outs)
    return frozenset(live)


def _entered(runs: Counter, own: set) -> dict:
    """``{scope: times it looks entered}``, from the `runs` apart of its input-dependent
    equations: for a scope with such equations of its own (`own`), its runs; for one without
    (a container), at most as many as its most entered sub-scope's, and 0 where its runs are
    more than that: its children ran apart, called from outside it (see the module
    docstring)."""
    children: dict = {}
    for scope in runs:
        children.setdefault(scope[:-1], []).append(scope)
    times: dict = {}
    most: dict = {}  # scope -> the most times a scope in it (itself, or else below) is entered
    for scope in sorted(runs, key=len, reverse=True):  # sub-scopes first
        inner = max((most[c] for c in children.get(scope, ())), default=runs[scope])
        times[scope] = runs[scope] if scope in own or runs[scope] <= inner else 0
        most[scope] = times[scope] or inner
    return times


def _reused(entered: dict, weights: Counter, names: set) -> dict:
    """``{scope site: times entered}`` for the scopes among `names` that look entered more than
    once (a ``jax.named_scope`` reused in a loop, a module called several times): their
    input-dependent equations form several runs apart (`entered`, see `_entered`), or one
    weight feeds several linear layers directly in them (`weights`: ``(scope, weight id) ->
    layers``). Entries run back to back leave no other trace: the name stack is the same."""
    times = Counter({"/".join(scope): n for scope, n in entered.items()})
    for (scope, _), n in weights.items():
        times["/".join(scope)] = max(times["/".join(scope)], n)
    return {name: n for name, n in times.items() if n > 1 and name in names}


def _used(program: Program) -> frozenset:
    """The value ids that the outputs of `program` are computed from (the outputs included)."""
    used = {r for r in program.output_ids if isinstance(r, int)}
    for node in reversed(program.nodes):
        if any(r in used for r in node.outs):
            used.update(r for r in node.ins if isinstance(r, int))
    return frozenset(used)


def _root(program: Program) -> tuple[str, ...]:
    stacks = [n.stack for n in program.nodes if n.stack and n.outs and n.outs[0] in program.depends
              and not any(part.endswith(EDIT_MARK) for part in n.stack)]
    if (stacks and all(s and s[0] == stacks[0][0] for s in stacks) and any(len(s) > 1 for s in stacks)
            and stacks[0][0][:1].isupper()):
        return stacks[0][:1]
    return ()


# Sums of several input-dependent terms that are no pool (rules' ``sum`` method; see `pool_op`).
SUMS = frozenset({"reduce_sum", "scatter_add", "cumsum"})
# Maxima and minima that are no pool: a max over axes that include the channels (a maxout unit's
# max over its pieces), a min over any (rules' ``pool`` method, as a max pool's; see `pool_op`).
EXTREMA = frozenset({"reduce_max", "reduce_min"})
_SCATTER_ADDS = frozenset({"scatter-add", "scatter_add"})


def pool_op(program: Program, i: int, axes: dict, batch: dict, users: dict) -> str | None:
    """What node `i` pools or sums, given the channel (`axes`) and batch (`batch`) axes of each
    value and each value's consumers (`users`), or None.

    Pools: ``"max_pool"``, ``"avg_pool"`` for windows; ``"max_pool"`` for a max, ``"mean"`` for
    a sum, over axes that are neither the batch nor the channels (the reduced value's channel
    axis, or else its last): a text CNN's max over time, global max or average pooling.
    Extrema (`EXTREMA`), of several floating values, each example's apart: ``"reduce_max"``,
    a max over axes that include the channels (maxout), and ``"reduce_min"``, a min over any.
    Sums (`SUMS`), of several floating input-dependent terms, each example's apart:
    ``"reduce_sum"`` over other axes (a region of a class map, the features),
    ``"scatter_add"`` of input-dependent updates into a constant (``segment_sum``,
    ``.at[i].add``), ``"cumsum"``. A mean, sum, max or min that is a statistic (`_statistic`:
    a softmax's shift ``z - z.max(-1, keepdims=True)``) is none of these.
    """
    node = program.nodes[i]
    if node.prim == "reduce_window_max":
        return "max_pool"
    if node.prim == "reduce_window_sum":
        return "avg_pool"
    source = node.ins[2] if node.prim in _SCATTER_ADDS else node.ins[0]
    if _is_const(program, source):
        return None
    shape = program.avals[source].shape
    b = batch.get(source)
    b = b if isinstance(b, int) else 0
    channels = axes.get(source)
    channels = len(shape) - 1 if channels is None else channels % max(len(shape), 1)
    if node.prim in ("reduce_max", "reduce_min", "reduce_sum"):
        reduced = tuple(node.eqn.params["axes"])
        pooled = bool(reduced) and all(a not in (b, channels) for a in reduced)
        if node.prim == "reduce_max" and pooled:
            return "max_pool"
        several = b not in reduced and math.prod(shape[a] for a in reduced) > 1
        kind = node.prim if node.prim in EXTREMA else ("mean" if pooled else "reduce_sum")
        op = kind if several else None
    elif node.prim == "cumsum":
        op = "cumsum" if node.eqn.params["axis"] != b and shape[node.eqn.params["axis"]] > 1 else None
    elif node.prim in _SCATTER_ADDS:
        apart = all(_is_const(program, r) for r in node.ins[:2]) and _scatter_apart(program, node, b)
        op = "scatter_add" if apart else None
    else:
        return None
    if op is None or not np.issubdtype(program.avals[node.outs[0]].dtype, np.floating):
        return None
    return None if _statistic(program, i, users) else op


def _scatter_apart(program: Program, node: Node, b: int) -> bool:
    """True when the scatter-add `node` adds each example's updates (batch axis `b` of its
    updates) into that example's part of the result: `b` is a window axis of the updates (a
    ``segment_sum`` vmapped with shared indices), their scatter axis that the indices batch
    (vmapped with per-example indices), or the indices' row that writes the result's first
    axis one row per example (``zeros.at[jnp.arange(n)[:, None], idx].add(h)``)."""
    dims = node.eqn.params["dimension_numbers"]
    if b in dims.update_window_dims:
        return True
    rank = len(node.eqn.invars[2].aval.shape)
    scattered = [a for a in range(rank) if a not in dims.update_window_dims]
    return (scattered.index(b) in dims.scatter_indices_batching_dims
            or _row_axis(node, program, 0) == scattered.index(b))


def _statistic(program: Program, i: int, users: dict) -> bool:
    """True when the value of node `i`, a sum (or a max or min), is a statistic of a
    normalisation: through shape ops and elementwise ops whose other operands are constants (a
    mean's division by the count, ``+ eps``, a clamp, a ``where``, a ``log``, a
    ``stop_gradient``) it is the divisor of a division, goes into a square root, or meets
    another input-dependent value in a subtraction. So the total of a softmax
    (``e / e.sum(-1)``, ``x - log(sum(exp(x)))``) and its shift (``x - x.max(-1)``) or an L1
    or L2 normalisation, and the mean and variance of a LayerNorm, RMSNorm or GroupNorm
    (``x - mean``, ``E[x^2] - E[x]^2``, ``rsqrt(var + eps)``).

    Such a sum summarises a value that flows on beside it, and what it passes back belongs to
    the normalisation's rule (AttnLRP and conservative propagation hold the scale constant,
    Zennit has no LayerNorm rule): it is no place and keeps its plain gradient. Every other sum
    is a sum of terms, each term its contribution, as an average pool's (LRP's Norm rule)."""
    todo, seen = [program.nodes[i].outs[0]], set()
    while todo:
        ref = todo.pop()
        for j in users.get(ref, ()):
            node = program.nodes[j]
            constant = all(_is_const(program, r) for r in node.ins if r != ref)
            if (node.prim in NORMALIZERS or node.prim == "div" and node.ins[1] == ref
                    or node.prim == "sub" and not constant):
                return True
            elementwise = (constant and node.prim not in _LINEAR and not node.prim.startswith("cum")
                           and program.avals[node.outs[0]].shape == program.avals[ref].shape)
            passes = node.prim in _SHAPE_OPS or node.prim == "transpose" or elementwise
            if passes and node.outs[0] not in seen:
                seen.add(node.outs[0])
                todo.append(node.outs[0])
    return False


def _users(program: Program) -> dict:
    """The indices of the nodes that use each value id, in program order."""
    found: dict = {}
    for j, node in enumerate(program.nodes):
        for r in node.ins:
            if isinstance(r, int):
                found.setdefault(r, []).append(j)
    return found


def analyze(program: Program) -> SiteMap:
    """Name the sites of `program` (see the module docstring for the rules)."""
    consumers = _consumers(program)
    root = _root(program)
    live = _live(program)
    scope_last: dict[tuple, int] = {}
    derived: list[tuple[int, str, str, str, int]] = []  # (node, name, kind, op, value id)
    counters: Counter = Counter()
    node_names: dict[int, str] = {}
    groups: dict[int, tuple[int, ...]] = {}
    absorbed: set[int] = set()
    is_module: set[tuple] = set()  # scopes that are more than a list of numbered children
    edited: dict[str, int] = {}  # site name -> value id of an intervention's result
    pools: dict[int, str] = {}
    runs: Counter = Counter()  # scope -> runs of input-dependent equations apart
    own: set[tuple] = set()  # scopes with input-dependent equations directly in them
    last_at: dict[tuple, int] = {}  # scope -> position of its last input-dependent equation
    at = 0  # position among the input-dependent equations
    weights: Counter = Counter()  # (scope, weight id) -> linear layers directly in the scope
    axes = channel_axes(program)
    batch = batch_axes(program)
    users = _users(program)
    fixed = fixed_values(program)

    in_loop: dict[str, tuple] = {}  # placeholder name of a node in a loop step -> its key
    live_templates: set = set()  # scopes inside loop steps, step number as "*", that are sites

    def step_at(node: Node) -> int:
        """The index of the loop step's number in `node`'s stack once the root is dropped."""
        return node.step[1] - (len(root) if node.stack[: len(root)] == root else 0)

    def template(node: Node, stack: tuple) -> tuple:
        at = step_at(node)
        return (node.step[0],) + stack[:at] + ("*",) + stack[at + 1:]

    def name_for(scope: tuple, base: str, i: int) -> str:
        node = program.nodes[i]
        if node.step is not None and step_at(node) < len(scope):  # numbered after the loop
            placeholder = f"\0{i}"
            in_loop[placeholder] = (template(node, scope), base, node.step[2], scope)
            return placeholder
        key = (scope, base)
        k = counters[key]
        counters[key] += 1
        return "/".join(scope + (base if k == 0 else f"{base}_{k}",))

    for i, node in enumerate(program.nodes):
        if not node.outs:
            continue
        stack = node.stack[len(root):] if node.stack[: len(root)] == root else node.stack
        if node.step is not None and node.outs[0] in program.depends:
            live_templates.update(template(node, stack[:k])
                                  for k in range(step_at(node) + 2, len(stack) + 1))
        edit = next((k for k, part in enumerate(stack) if part.endswith(EDIT_MARK)), None)
        if edit is not None:  # the output of an intervention: the new value of that site
            edited["/".join(stack[:edit] + (stack[edit][: -len(EDIT_MARK)],))] = node.outs[0]
            continue
        if node.outs[0] not in program.depends:  # weights, and constants hoisted out of loops
            continue
        own.add(stack)
        for k in range(1, len(stack) + 1):
            if k == len(stack) or not stack[k].isdigit():
                is_module.add(stack[:k])
            if last_at.get(stack[:k]) != at - 1:
                runs[stack[:k]] += 1
            scope_last[stack[:k]], last_at[stack[:k]] = i, at
        at += 1
        if i in absorbed:
            continue
        shared = batch.get(node.outs[0]) == SHARED  # computed over the batch: no batch axis
        if node.activation == "relu" and _is_clamp(program, i, consumers):
            continue
        if node.activation is not None and shared:  # e.g. max(var, 0) of batch statistics
            continue
        if node.activation is not None:
            name = name_for(stack, node.activation, i)
            derived.append((i, name, "activation", node.activation, node.outs[0]))
            node_names[i] = name
        elif node.prim in NORMALIZERS:  # a normaliser (LayerNorm, RMSNorm): a place for rules, no site
            node_names[i] = "/".join(stack + (node.prim,))
        elif node.prim in PRODUCTS and all(isinstance(r, int) and r in live for r in node.ins):
            node_names[i] = "/".join(stack + (PRODUCTS[node.prim],))  # a place for rules, no site
        elif node.prim == "add" and all(not _is_const(program, r) for r in node.ins):
            name = name_for(stack, "add", i)
            if not shared:  # a sum of batch statistics is a place for rules, no site
                derived.append((i, name, "add", "add", node.outs[0]))
            if not any(r in program.stopped for r in node.ins):  # a stopped term is a constant
                node_names[i] = name
        elif op := pool_op(program, i, axes, batch, users):
            chain = _pool_chain(program, i, consumers)
            absorbed.update(chain[1:])
            name = name_for(stack, op, i)
            if op != "mean" and op not in SUMS and op not in EXTREMA:  # places for rules, not sites
                derived.append((i, name, "pool", op, program.nodes[chain[-1]].outs[0]))
            node_names[i], groups[i], pools[i] = name, chain, op
        elif node.prim in _LINEAR:
            operands = [r for r in node.ins if not _is_const(program, r)]
            if len(operands) != 1 or resamples(node, program, fixed, axes):
                continue
            groups[i] = affine_chain(program, i, consumers, same_stack=False)
            op = "dense" if node.prim == "dot_general" else "conv"
            if stack and node.stack not in program.loop_scopes:
                node_names[i] = "/".join(stack)
                weights.update((stack, r) for r in node.ins
                               if isinstance(r, int) and r not in operands)
            else:  # outside any scope, or in the step of a loop that has none (``scan/0``)
                chain = affine_chain(program, i, consumers, same_stack=True)
                absorbed.update(chain[1:])
                name = name_for(stack, _LINEAR[node.prim], i)
                derived.append((i, name, "linear", op, program.nodes[chain[-1]].outs[0]))
                node_names[i] = name

    names, constant = _loop_names(program, in_loop, set(node_names), live_templates, root,
                                  step_at, template)
    derived = [(i, names.get(name, name), kind, op, ref) for i, name, kind, op, ref in derived]
    node_names = {i: names.get(name, name) for i, name in node_names.items()}
    entered = _entered(runs, own)
    entries = [(i, "/".join(scope), "module", "module", program.nodes[i].outs[0])
               for scope, i in scope_last.items() if scope in is_module and entered[scope]]
    entries += derived
    producer = {ref: i for i, node in enumerate(program.nodes) for ref in node.outs}
    entries = [(i, name, kind, op, _batch_first(program, ref, batch, consumers))
               for i, name, kind, op, ref in entries]
    # in the order the values are computed; on one value, a derived site before its scope and
    # a scope before its parent (``mlp/layers/2``, then ``mlp``)
    entries.sort(key=lambda e: (producer[e[4]], e[2] == "module", -e[1].count("/")))
    # a value the outputs never use (a branch left dead) is no site; the sites of a function
    # with an intervention stay those of the original, where an ablation may have cut them off
    used = _used(program) if not edited else None
    sites, ids, moved, seen = [], {}, {}, set()
    for _, name, kind, op, ref in entries:
        if name in seen or used is not None and ref not in used:
            continue
        seen.add(name)
        aval = program.avals[ref]
        shape, perm, axis = _layout(tuple(aval.shape), batch.get(ref), axes.get(ref))
        if perm != tuple(range(len(shape))):
            moved[name] = perm
        sites.append(Site(name, shape, np.dtype(aval.dtype), kind, op, axis))
        ids[name] = ref
    ids.update({name: ref for name, ref in edited.items() if name in ids})
    return SiteMap(tuple(sites), ids, node_names, groups, root, moved, pools,
                   mixes_batch(program, batch), frozenset(constant - set(ids)),
                   _reused(entered, weights, set(ids)))


def _loop_names(program: Program, in_loop: dict, named: set, live_templates: set,
                root: tuple, step_at, template) -> tuple[dict, set]:
    """Derived names inside unrolled loop steps, and the names that are constants at a step.

    A derived name in a step is numbered by its node's position in the loop body among the
    positions that get that name at some step (``add``, ``add_1``, ...), so the same position
    has the same name in every step, and a step where it is a constant simply lacks it.

    Args:
      program: the unrolled program.
      in_loop: placeholder name -> (scope template, base, position, scope) of each named node.
      named: the indices of the nodes that got a derived name.
      live_templates: the scopes inside loop steps that are sites, as templates.
      root: the dropped root scope.
      step_at, template: as in `analyze`.

    Returns:
      ``(placeholder -> name, names that are constants at their step)``.
    """
    positions: dict = {}  # (template, base) -> positions that get that name
    for key, base, pos, _ in in_loop.values():
        positions.setdefault((key, base), set()).add(pos)
    rank = {(key, base, pos): k for (key, base), found in positions.items()
            for k, pos in enumerate(sorted(found))}

    def numbered(scope: tuple, base: str, k: int) -> str:
        return "/".join(scope + (base if k == 0 else f"{base}_{k}",))

    names = {placeholder: numbered(scope, base, rank[key, base, pos])
             for placeholder, (key, base, pos, scope) in in_loop.items()}
    # the nodes at those positions that are no site at their step (a constant, or an add with
    # a constant operand), and the scopes of steps that hold only constants where other steps
    # have a site
    by_position = {(key[0], pos): (base, k) for (key, base, pos), k in rank.items()}
    constant = set()
    for i, node in enumerate(program.nodes):
        if node.step is None or not node.outs or i in named:
            continue
        stack = node.stack[len(root):] if node.stack[: len(root)] == root else node.stack
        if step_at(node) >= len(stack):
            continue
        found = by_position.get((node.step[0], node.step[2]))
        if found is not None:
            constant.add(numbered(stack, *found))
        if node.outs[0] in program.depends:
            continue
        constant.update("/".join(stack[:k]) for k in range(step_at(node) + 2, len(stack) + 1)
                        if template(node, stack[:k]) in live_templates)
    return names, constant


def _batch_first(program: Program, ref: int, batch: dict, consumers: tuple[Counter, dict]) -> int:
    """`ref`, or the value that `vmap` makes of it with the batch axis first: ``vmap`` moves the
    batch of a layer's result to the front only where the vmapped function returns, which may
    be after the layer's scope has ended (an Equinox ``Linear`` without a bias, vmapped over
    tokens: ``(features, batch, tokens)``, then a transpose). Followed through transposes and
    size-1 reshapes that are the value's only use, so that editing the later value is editing
    this one."""
    count, by_input = consumers
    current = ref
    while batch.get(current) not in (0, None, SHARED):
        if count[current] != 1 or current not in by_input:
            return ref
        node = program.nodes[by_input[current]]
        if len(node.ins) != 1 or not _relayout(program, node):
            return ref
        current = node.outs[0]
    return current if batch.get(current) == 0 else ref


def _layout(shape: tuple, batch, channels) -> tuple[tuple, tuple, int | None]:
    """``(presented shape, permutation, channel axis)`` of a value of `shape` whose batch axis
    is `batch` (an int, or not known) and channel axis `channels`: the batch moved first, then
    channels that are neither first nor last moved last; the channel axis is counted in the
    batch-first value (positive where it was moved, negative from the end otherwise)."""
    order = list(range(len(shape)))
    if isinstance(batch, int) and batch != 0 and batch != channels:
        order.remove(batch)
        order.insert(0, batch)
    axis = None if channels is None else order.index(channels)
    if axis is not None and 0 < axis < len(shape) - 1:
        order.append(order.pop(axis))
    elif axis is not None:
        axis -= len(shape)
    return tuple(shape[a] for a in order), tuple(order), axis
