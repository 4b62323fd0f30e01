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

The rules mirror :mod:`jaxplain.core._channels`: transposes, reshapes, broadcasts, squeezes and
reductions move the axis; ``dot_general`` and convolutions place it by their dimension numbers;
ops that keep the rank and the axis's size keep it; a gather of a constant table's rows at
batched indices (an embedding lookup of token ids) puts it where the indices' batch axis lands;
other gathers, scatters, loops and ops that scan or reorder along the batch lose it (the value
is then presented as the model computes it). An intervention's result takes the batch axis of the
value it replaces, as in :func:`jaxplain.core._channels.channel_axes`.
"""

from __future__ import annotations

from jaxplain.core._channels import _landings
from jaxplain.core._program import Program

#: The state of a value computed over the whole batch: it has no batch axis.
SHARED = "shared"

_LOSE = frozenset({"scatter", "scatter-add", "scatter_add", "scatter-mul", "scatter_mul",
                   "scatter-min", "scatter_min", "scatter-max", "scatter_max", "scan", "while",
                   "cond", "sort", "argsort"})
_ALONG = frozenset({"cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"})  # param "axis"
_REDUCE = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and",
                     "reduce_or", "argmax", "argmin"})


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


def _gather(eqn, known: list) -> int | str | None:
    """Where a gather of rows of a constant operand (an embedding table) at input-dependent
    indices (token ids) holds the indices' batch axis: the output's axes that are not slice
    offsets are the indices' axes but the last (the index vector), in order. A gather from an
    input-dependent operand loses the axis."""
    if len(known) != 1 or known[0][0] != 1:
        return None
    _, state, shape = known[0]
    if state == SHARED:
        return SHARED
    if state == len(shape) - 1:  # the batch indexes the table's axes: no batch axis out
        return None
    offsets = eqn.params["dimension_numbers"].offset_dims
    rank = len(eqn.outvars[0].aval.shape)
    return [a for a in range(rank) if a not in offsets][state]


def _through_softmax(eqn, axis: int) -> int:
    """Where a softmax template's (``jaxplain.core._written_out``) output holds its input's
    `axis`: moved by the transpose of its input, when it computes the softmax vmapped over an
    axis as ``jax.nn.dot_product_attention`` does, else kept."""
    body = eqn.params["jaxpr"].jaxpr
    for inner in body.eqns:
        if inner.primitive.name == "transpose" and inner.invars[0] is body.invars[0]:
            return tuple(inner.params["permutation"]).index(axis)
    return axis


def _forward(node, states: dict, program: Program) -> int | str | None:
    eqn, prim = node.eqn, node.prim
    out_shape = tuple(eqn.outvars[0].aval.shape)
    dependent = [(k, r, tuple(v.aval.shape)) for k, (r, v) in enumerate(zip(node.ins, eqn.invars))
                 if isinstance(r, int) and r in program.depends]
    known = [(k, states.get(r), shape) for k, r, shape in dependent]
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
    if prim in _LOSE or len(eqn.outvars) != 1:
        return None
    if prim == "gather":
        return _gather(eqn, known)
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
        elif prim in _ALONG and eqn.params.get("axis") == axis:
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
            states[node.outs[0]] = state if state == SHARED else int(state)
    return states


def mixes_batch(program: Program, states: dict) -> bool:
    """True when an output of `program` depends on a value computed over the whole batch, i.e.
    the model's output for one example depends on the other examples of a batch (of more than
    one example: with one, nothing is mixed)."""
    shape = program.avals[program.input_id].shape
    if not shape or shape[0] < 2:
        return False
    mixed = {ref for ref, state in states.items() if state == SHARED}
    for node in program.nodes:
        if any(isinstance(r, int) and r in mixed for r in node.ins):
            mixed.update(node.outs)
    return any(isinstance(r, int) and r in mixed for r in program.output_ids)
