"""Which axis of each value holds the batch, followed forward from the model's input.

A model function is batch first, but the values inside it need not be: ``vmap`` puts the batch
axis of a value wherever its batching rule finds convenient and moves it to the front only
where the vmapped function returns. An Equinox ``Linear`` without a bias, vmapped over the
tokens inside the adapter's vmap over the batch, computes ``W @ x`` as one ``dot_general`` of
shape ``(features, batch, tokens)``; the transpose to ``(batch, tokens, features)`` comes after
its scope has ended. :func:`batch_axes` tells the kernel where the batch is, so that it can
present every site batch first (see :func:`jaxplain.core._sites.analyze`), and where a value
has no batch axis at all: it was reduced or contracted over the batch (the batch mean and
variance of a BatchNorm that uses batch statistics), so it is shared by every example.

The rules mirror :mod:`jaxplain.core._channels`: transposes, reshapes, broadcasts, squeezes,
reductions, stacks and the pieces of a split or unstack move the axis; ``dot_general`` and
convolutions place it by their dimension numbers; ops that keep the rank and the axis's size
keep it; a gather of a constant table's rows at batched indices (an embedding lookup of token
ids) puts it where the indices' batch axis lands;
a gather or scatter at constant indices that leaves the batch axis whole (message passing
over the nodes of a graph, ``h[src]`` and ``segment_sum`` of a ``(nodes, batch, features)``
value) puts it where that axis's slice lands; one that indexes the batch axis by an ``iota``
along an axis of the indices (``h[jnp.arange(n), pos]``, ``.at[jnp.arange(n)[:, None], idx]``:
example i's row of the indices reads or writes example i) puts it where that axis lands; other
gathers and scatters, loops, ops that scan or reorder along the batch, and reshapes that merge
the batch axis with another (a per-frame layer written as ``x.reshape(n * T, ...)``) lose it (the
value is then presented as the model computes it; :func:`lost_by` says which of these did it,
for error messages). An intervention's result takes the batch axis of the value it replaces, as
in :func:`jaxplain.core._channels.channel_axes`.

:func:`mixes_batch` says whether one example's output depends on the others: through a value
computed over the whole batch, or through an op that moves values along the batch axis (a
gather or scatter at constant indices into it, a sort, cumulative sum, reversal, shifted slice,
pad, concatenation, split or unstack along it, a window or convolution over it) -- node
classification on one graph, ``(nodes, features) -> (nodes, classes)``, is such a model.
"""

from __future__ import annotations

import math
import weakref

import jax
import numpy as np

from jaxplain.core._channels import _landings
from jaxplain.core._program import Lit, Program

#: The state of a value computed over the whole batch: it has no batch axis.
SHARED = "shared"

_SCATTER = frozenset({"scatter", "scatter-add", "scatter_add", "scatter-sub", "scatter_sub",
                      "scatter-mul", "scatter_mul", "scatter-min", "scatter_min", "scatter-max",
                      "scatter_max"})
_LOSE = frozenset({"scan", "while", "cond"})
_ALONG = frozenset({"cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"})  # param "axis"
_REDUCE = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and",
                     "reduce_or", "argmax", "argmin"})
_WINDOWED = frozenset({"reduce_window_sum", "reduce_window_max", "reduce_window_min",
                       "reduce_window"})
# Ops that cut a value into several along its axis ``params["axis"]``: ``jnp.split`` (pieces of
# the same rank) and ``jnp.unstack`` (that axis dropped).
_PIECES = frozenset({"split", "unstack"})
# program -> {value id: the node that computes it}, for following index arrays back
_PRODUCERS: "weakref.WeakKeyDictionary[Program, dict]" = weakref.WeakKeyDictionary()


def _dot_general(eqn, states: list) -> int | str | None:
    (contract, batch) = eqn.params["dimension_numbers"]
    ranks = [len(v.aval.shape) for v in eqn.invars]
    free = [[a for a in range(ranks[k]) if a not in contract[k] and a not in batch[k]]
            for k in (0, 1)]
    found = []
    for k, state in enumerate(states):
        if state is None or state == SHARED:
            found.append(state)
        elif state in batch[k]:
            found.append(list(batch[k]).index(state))
        elif state in contract[k]:
            found.append(SHARED)
        else:
            found.append(len(batch[0]) + (len(free[0]) if k == 1 else 0) + free[k].index(state))
    return _combine(found)


def _combine(found: list) -> int | str | None:
    """One state from the operands' contributions: their batch axis if those that have one
    agree, shared if every operand is shared, else unknown (None)."""
    axes = {s for s in found if s is not None and s != SHARED}
    if len(axes) == 1:
        return axes.pop()
    if not axes and found and all(s == SHARED for s in found):
        return SHARED
    return None


def _gather(node, known: list, program: Program) -> int | str | None:
    """Where a gather holds the batch axis. Of a constant table (an embedding) at batched
    indices (token ids): where the indices' batch axis lands, the output's axes that are not
    slice offsets being the indices' axes but the last (the index vector), in order. Of a
    batched operand at constant indices: the offset axis of its batch axis, when the gather
    takes that axis whole (``h[:, src]``, or ``h[src]`` of a ``(nodes, batch, features)``
    value), or the indices' batching axis paired with it (a vmapped ``take_along_axis``) or
    counting along it (:func:`_row_axis`)."""
    eqn = node.eqn
    dn = eqn.params["dimension_numbers"]
    shape = tuple(eqn.invars[0].aval.shape)
    rank = len(eqn.outvars[0].aval.shape)
    positions = [a for a in range(rank) if a not in dn.offset_dims]  # the indices' axes, in order
    by = {k: state for k, state, _ in known}
    found = []
    if 1 in by:
        state = by[1]
        last = len(eqn.invars[1].aval.shape) - 1
        found.append(state if state is None or state == SHARED  # an index of the table's axes:
                     else None if state == last else positions[state])  # no batch axis out
    if 0 in by:
        state = by[0]
        if state is None or state == SHARED:
            found.append(state)
        elif state in dn.operand_batching_dims:
            paired = dn.start_indices_batching_dims[list(dn.operand_batching_dims).index(state)]
            found.append(positions[paired])
        elif 1 in by:
            found.append(None)
        elif _gathers_along(dn, eqn.params["slice_sizes"], shape, state):
            row = _row_axis(node, program, state)
            found.append(None if row is None else positions[row])
        else:
            kept = [a for a in range(len(shape))
                    if a not in dn.collapsed_slice_dims and a not in dn.operand_batching_dims]
            found.append(int(dn.offset_dims[kept.index(state)]))
    return _combine(found)


def _gathers_along(dn, slice_sizes, shape: tuple, axis: int) -> bool:
    """Whether a gather indexes `axis` of its operand (or takes part of it), other than as a
    batching axis paired with the indices' (``take_along_axis``: each example its own)."""
    return axis not in dn.operand_batching_dims and (
        axis in dn.start_index_map or axis in dn.collapsed_slice_dims
        or slice_sizes[axis] != shape[axis])


def _scatter(node, known: list, program: Program) -> int | str | None:
    """Where a scatter at constant indices holds the batch axis: the operand's, and that of
    the updates where their batch axis is a whole update window axis of an operand axis that is
    not scattered into (``segment_sum`` of a ``(nodes, batch, features)`` value), or is paired
    with the operand's batching axis (a vmapped scatter) or written to it one to one
    (:func:`_row_axis`); else (updates written to places along the batch, or batched indices)
    none."""
    by = {k: state for k, state, _ in known}
    if 1 in by:
        return None
    found = [by[0]] if 0 in by else []
    if 2 in by:
        state = by[2]
        found.append(state if state is None or state == SHARED
                     else _scattered_to(node, program, state))
    return _combine(found)


def _scattered_to(node, program: Program, axis: int) -> int | None:
    """The operand axis that the updates' `axis` is a whole window axis of (or is paired
    with, for a batching axis, or written to one to one, see :func:`_row_axis`), or None when
    the updates' slices along it are scattered."""
    eqn = node.eqn
    dn = eqn.params["dimension_numbers"]
    operand, updates = (tuple(eqn.invars[k].aval.shape) for k in (0, 2))
    if axis in dn.update_window_dims:
        window = [a for a in range(len(operand))
                  if a not in dn.inserted_window_dims and a not in dn.operand_batching_dims]
        target = window[list(dn.update_window_dims).index(axis)]
        whole = target not in dn.scatter_dims_to_operand_dims and updates[axis] == operand[target]
        return int(target) if whole else None
    scatter_axes = [a for a in range(len(updates)) if a not in dn.update_window_dims]
    index_axis = scatter_axes.index(axis)  # the indices' axes but the last, in order
    if index_axis in dn.scatter_indices_batching_dims:
        paired = list(dn.scatter_indices_batching_dims).index(index_axis)
        return int(dn.operand_batching_dims[paired])
    return next((int(target) for target in dn.scatter_dims_to_operand_dims
                 if _row_axis(node, program, target) == index_axis), None)


def _row_axis(node, program: Program, axis: int) -> int | None:
    """The axis of a gather's or scatter's input-independent indices that reads or writes its
    operand's `axis` one to one: the indices' column for `axis` is ``0, 1, ...`` along it, over
    the whole of `axis`, and the same along their other axes (``h[jnp.arange(n), pos]``,
    ``.at[jnp.arange(n)[:, None], idx]``: example i's row of the indices is example i's); or
    None."""
    eqn, dn = node.eqn, node.eqn.params["dimension_numbers"]
    if node.prim == "gather":
        columns, single = dn.start_index_map, eqn.params["slice_sizes"][axis] == 1
    else:
        columns, single = dn.scatter_dims_to_operand_dims, axis in dn.inserted_window_dims
    if axis not in columns or not single:
        return None
    if program not in _PRODUCERS:
        _PRODUCERS[program] = {ref: n for n in program.nodes for ref in n.outs}
    producer, ref, column = _PRODUCERS[program], node.ins[1], list(columns).index(axis)
    rank = len(eqn.invars[1].aval.shape)
    while isinstance(ref, int) and ref in producer and (  # to the column's own array
            producer[ref].prim == "convert_element_type" or (
                producer[ref].prim == "concatenate"
                and producer[ref].eqn.params["dimension"] == rank - 1)):
        part = producer[ref]
        if part.prim == "concatenate":
            widths = [v.aval.shape[-1] for v in part.eqn.invars]
            k = next(k for k in range(len(widths)) if column < sum(widths[:k + 1]))
            column -= sum(widths[:k])
            ref = part.ins[k]
        else:
            ref = part.ins[0]
    if not isinstance(ref, int) or program.avals[ref].shape[-1] != 1:
        return None
    row = _counting(program, producer, ref, (*range(rank - 1), None))
    if row is None or eqn.invars[1].aval.shape[row] != eqn.invars[0].aval.shape[axis]:
        return None
    return row


def _counting(program: Program, producer: dict, ref, axes: tuple) -> int | None:
    """The axis of the indices that value `ref` counts along: ``0, 1, ...`` along its axis
    standing for it, the same along the others (`axes`: the indices' axis that each axis of
    `ref` stands for, None where it stands for none). Followed back through broadcasts, casts
    and jnp's wrap of negative indices, ``select_n(c < 0, c, c + n)``, to an ``iota`` or a
    constant (``np.arange``); a reversal or permutation counts along nothing."""
    if not isinstance(ref, int):
        return None
    node = producer.get(ref)
    if node is None:
        value = _concrete(program, ref)
        if value is None:
            return None
        return next((a for d, a in enumerate(axes) if a is not None and np.array_equal(
            value, np.arange(value.shape[d]).reshape([-1 if k == d else 1 for k in range(
                value.ndim)]) + np.zeros(value.shape, int))), None)
    if node.prim == "iota":
        return axes[node.eqn.params["dimension"]]
    if node.prim == "convert_element_type":
        return _counting(program, producer, node.ins[0], axes)
    if node.prim == "broadcast_in_dim":
        shape, out = node.eqn.invars[0].aval.shape, node.eqn.outvars[0].aval.shape
        return _counting(program, producer, node.ins[0], tuple(
            axes[d] if shape[j] == out[d] else None
            for j, d in enumerate(node.eqn.params["broadcast_dimensions"])))
    if node.prim == "select_n" and len(node.ins) == 3 and isinstance(node.ins[0], int):
        test, never = producer.get(node.ins[0]), _concrete(program, node.ins[0])
        if (never is not None and not never.any()) or (  # c < 0 folded, or c < 0 for c >= 0
                test is not None and test.prim == "lt" and test.ins[0] == node.ins[1]
                and isinstance(test.ins[1], Lit) and np.all(np.asarray(test.ins[1].value) == 0)):
            return _counting(program, producer, node.ins[1], axes)  # the select keeps c
    return None


def _concrete(program: Program, ref: int) -> np.ndarray | None:
    """The value of constant `ref`, or None when it is computed or traced."""
    value = program.consts.get(ref)
    return None if value is None or isinstance(value, jax.core.Tracer) else np.asarray(value)


def _through_softmax(eqn, axis: int) -> int:
    """Where a softmax template's (``jaxplain.core._written_out``) output holds its input's
    `axis`: moved by the transpose of its input, when it computes the softmax vmapped over an
    axis as ``jax.nn.dot_product_attention`` does, else kept."""
    body = eqn.params["jaxpr"].jaxpr
    for inner in body.eqns:
        if inner.primitive.name == "transpose" and inner.invars[0] is body.invars[0]:
            return tuple(inner.params["permutation"]).index(axis)
    return axis


def _known(node, states: dict, program: Program) -> list:
    """``(operand position, batch state, shape)`` of each input-dependent operand of `node`."""
    return [(k, states.get(r), tuple(v.aval.shape))
            for k, (r, v) in enumerate(zip(node.ins, node.eqn.invars))
            if isinstance(r, int) and r in program.depends]


def _piece(node, state: int | str) -> int | str | None:
    """Where each output of a split or unstack (`_PIECES`) of a value with batch state `state`
    holds the batch axis: the operand's, less one past an unstacked axis; none when the cut is
    along the batch axis (each piece holds some of the examples)."""
    if state == SHARED:
        return SHARED
    cut = node.eqn.params["axis"] % len(node.eqn.invars[0].aval.shape)
    if state == cut:
        return None
    return state - (node.prim == "unstack" and state > cut)


def _forward(node, states: dict, program: Program) -> int | str | None:
    eqn, prim = node.eqn, node.prim
    out_shape = tuple(eqn.outvars[0].aval.shape)
    known = _known(node, states, program)
    if prim == "dot_general":
        per_operand = [None, None]
        for k, state, _ in known:
            per_operand[k] = state
        if all(s is None for s in per_operand):
            return None
        # a constant operand is shared by the batch; an unknown one leaves the result unknown
        dependent_ks = {k for k, _, _ in known}
        return _dot_general(eqn, [per_operand[k] if k in dependent_ks else SHARED for k in (0, 1)])
    if not known or all(state is None for _, state, _ in known):
        return None
    if prim in _PIECES:
        return _piece(node, known[0][1])
    if prim in _LOSE or len(eqn.outvars) != 1:
        return None
    if prim == "gather":
        return _gather(node, known, program)
    if prim in _SCATTER:
        return _scatter(node, known, program)
    if prim == "conv_general_dilated":
        k, state, _ = known[0]
        if k != 0 or state is None:
            return None
        if state == SHARED:
            return SHARED
        dn = eqn.params["dimension_numbers"]
        return dn.out_spec[0] if state == dn.lhs_spec[0] else None
    found = []
    for _, state, shape in known:
        if state is None or state == SHARED:
            found.append(state)
            continue
        axis = state
        if prim == "transpose":
            found.append(tuple(eqn.params["permutation"]).index(axis))
        elif prim == "reshape":
            hits = _landings(axis, shape, out_shape)  # several only for a batch of one
            found.append(hits[0] if hits else None)
        elif prim == "broadcast_in_dim":
            found.append(int(eqn.params["broadcast_dimensions"][axis]))
        elif prim == "squeeze":
            dims = eqn.params["dimensions"]
            found.append(None if axis in dims else axis - sum(d < axis for d in dims))
        elif prim in _REDUCE:
            dims = eqn.params["axes"]
            found.append(SHARED if axis in dims else axis - sum(d < axis for d in dims))
        elif node.activation == "softmax" and prim in ("jit", "pjit"):
            found.append(_through_softmax(eqn, axis))
        elif prim == "concatenate":
            same = len(out_shape) == len(shape) and eqn.params["dimension"] != axis
            found.append(axis if same else None)
        elif prim == "stack":  # a new axis among the operands' (``jnp.stack`` of branches)
            found.append(axis + (axis >= eqn.params["axis"]))
        elif (prim in _ALONG and eqn.params["axis"] == axis) or (
                prim == "sort" and eqn.params["dimension"] == axis):
            found.append(None)
        elif len(out_shape) == len(shape) and out_shape[axis] == shape[axis]:
            found.append(axis)  # activations, elementwise ops, pools, slices off the batch axis
        else:
            found.append(None)
    return _combine(found)


def batch_axes(program: Program) -> dict[int, int | str]:
    """``{value id: batch axis}`` for the input-dependent values whose batch axis is known, and
    ``{value id: SHARED}`` for those computed over the whole batch (no batch axis); values
    that the rules lose track of are absent."""
    states: dict[int, int | str] = {program.input_id: 0}
    for node in program.nodes:
        if not node.outs or node.outs[0] not in program.depends:
            continue
        edited = program.edits.get(node.outs[0])
        state = _forward(node, states, program) if edited is None else edited[1]
        if state is not None:
            for ref in node.outs if node.prim in _PIECES else node.outs[:1]:
                states[ref] = state if state == SHARED else int(state)
    return states


#: What :func:`lost_by` says of an op it cannot name more precisely.
LOST = "a loop, sort or gather the kernel cannot follow"
KEEP_FIRST = ("give f a leading batch axis that stays first (f = jax.vmap(g) over graphs or "
              "sequences, for g mapping one example to its logits)")
MERGED = ("a reshape that merges the batch axis with another axis (a per-frame layer written as "
          "x.reshape(n*T, ...))")
MERGED_FIX = ("apply the per-frame layer under jax.vmap over the examples instead of the reshape "
              "(f = jax.vmap(g), with g applying it to one video's T frames as its batch), or "
              "over examples and frames (jax.vmap(jax.vmap(frame)) for frame mapping one frame); "
              "jax.vmap over the time axis alone merges the axes the same way")


def _merges(node, axis: int) -> bool:
    """Whether reshape `node` merges its operand's `axis` with neighbouring axes into one
    output axis (``(n, T, ...) -> (n * T, ...)``, or ``(T, n, ...) -> (T * n, ...)`` after the
    transpose of its ``dimensions``)."""
    old, new = (tuple(v.aval.shape) for v in (node.eqn.invars[0], node.eqn.outvars[0]))
    order = node.eqn.params.get("dimensions")
    if order is not None:  # the operand is transposed by `order` first
        old, axis = tuple(old[d] for d in order), list(order).index(axis)
    return any(math.prod(new[:b]) == math.prod(old[:i]) and new[b] == math.prod(old[i:j])
               and new[b] > old[axis]
               for b in range(len(new)) for i in range(axis + 1)
               for j in range(axis + 1, len(old) + 1))


def lost_by(program: Program, states: dict, ref: int) -> tuple[str, str | None]:
    """``(cause, fix)``: what lost the batch axis of the input-dependent value `ref`, absent
    from ``states = batch_axes(program)``, for an error message that reads "lost (after
    {cause}) ... {fix}": :data:`MERGED` and :data:`MERGED_FIX` where a reshape on the way from
    the input merged the batch axis with another, else :data:`LOST` and :data:`KEEP_FIRST`."""
    producer = {r: node for node in program.nodes for r in node.outs}
    todo, seen = [ref], {ref}
    while todo:
        node = producer.get(todo.pop())
        for r in () if node is None else node.ins:
            if not isinstance(r, int) or r not in program.depends or r in seen:
                continue
            seen.add(r)
            state = states.get(r)
            if state is None:
                todo.append(r)
            elif state != SHARED and node.prim == "reshape" and _merges(node, state):
                return MERGED, MERGED_FIX
    return LOST, KEEP_FIRST


def _moves(node, states: dict, program: Program) -> bool:
    """Whether `node` moves values along the batch axis of an operand: its output at one
    example's place holds (or depends on) other examples' values. Ops at input-dependent
    indices, and operands whose batch axis is unknown, are not judged."""
    eqn, prim, params = node.eqn, node.prim, node.eqn.params
    known = [(k, a, shape) for k, a, shape in _known(node, states, program)
             if isinstance(a, int)]
    by = {k: a for k, a, _ in known}
    dependent = {k for k, r in enumerate(node.ins) if isinstance(r, int) and r in program.depends}
    if prim == "gather":
        return 0 in by and 1 not in dependent and _gathers_along(
            params["dimension_numbers"], params["slice_sizes"], known[0][2], by[0]) and (
            _row_axis(node, program, by[0]) is None)
    if prim in _SCATTER:
        return 2 in by and 1 not in dependent and _scattered_to(node, program, by[2]) is None
    if prim == "dot_general":  # examples against examples: a Gram matrix x @ x.T
        (_, batch) = params["dimension_numbers"]
        return len(known) == 2 and all(a not in batch[k] for k, a, _ in known)
    if prim == "concatenate":  # an operand's examples land at other places
        sizes = [v.aval.shape[params["dimension"]] for v in eqn.invars]
        return any(a == params["dimension"] and sum(sizes[:k]) for k, a, _ in known)
    if prim == "conv_general_dilated":
        if 0 not in by:
            return False
        lhs, rhs = params["dimension_numbers"].lhs_spec, params["dimension_numbers"].rhs_spec
        kernel = dict(zip(lhs[2:], (eqn.invars[1].aval.shape[d] for d in rhs[2:])))
        return by[0] == lhs[1] or kernel.get(by[0], 1) > 1
    for k, a, shape in known:
        out = tuple(eqn.outvars[0].aval.shape)
        if ((prim == "sort" and params["dimension"] == a)
                or (prim in _ALONG and params["axis"] == a)
                or (prim in _PIECES and params["axis"] % len(shape) == a)
                or (prim == "rev" and a in params["dimensions"])
                or (prim == "pad" and tuple(params["padding_config"][a]) != (0, 0, 0))
                or (prim in ("slice", "dynamic_slice") and k == 0 and out[a] != shape[a])
                or (prim == "dynamic_update_slice" and k == 1
                    and shape[a] != eqn.invars[0].aval.shape[a])
                or (prim in _WINDOWED and k == 0 and params["window_dimensions"][a] != 1)):
            return True
    return False


def mixes_batch(program: Program, states: dict) -> bool:
    """True when an output of `program` depends on other examples of the batch than its own:
    on a value computed over the whole batch, or through an op that moves values along the
    batch axis (:func:`_moves`). With a batch of one, nothing is mixed."""
    shape = program.avals[program.input_id].shape
    if not shape or shape[0] < 2:
        return False
    mixed = {ref for ref, state in states.items() if state == SHARED}
    for node in program.nodes:
        if (any(isinstance(r, int) and r in mixed for r in node.ins)
                or (node.outs and node.outs[0] in program.depends
                    and _moves(node, states, program))):
            mixed.update(node.outs)
    return any(isinstance(r, int) and r in mixed for r in program.output_ids)
