"""Which axis of each value holds the channels, read off the convolutions and dense layers.

A Flax convolution writes its features last (NHWC); an Equinox one writes them second (NCHW,
as PyTorch does). The methods that work per channel (Grad-CAM, NeuroChains' filter scores,
channel objectives, filter binarization, dissection) want them last, so the kernel presents a
site whose channels sit elsewhere moved to the last axis (see :mod:`jaxplain.core._capture`).

:func:`channel_axes` follows the channel axis forward from where it is made: the output feature
axis of a convolution, or the one output axis that a dense layer's weight contributes. Ops that
keep the rank and that axis's size (activations, bias adds, normalisations, pools, flips,
crops) keep it, and so do gathers whose axes map clearly (:func:`_gathered`: ``x[:, [2, 1,
0]]``); transposes, reshapes, broadcasts, squeezes, reductions and concatenations move it, and
so does a resampling (:func:`resamples`: ``jax.image.resize``'s products with interpolation
matrices along height and width); anything else forgets it. A reshape that splits the channel
axis or merges it with others (an Equinox ``GroupNorm``'s ``(c, h, w) -> (groups, c / groups,
h, w)``) leaves no channel axis, but where the channels lie in the row-major layout is
followed (:func:`_block`) through ops that keep the whole shape, so that a reshape back gives
the axis again. An intervention's result takes the channel axis of the value it replaces
(recorded by ``intervene``, see :func:`jaxplain.core._program.edit_scope`), so an edit, even
to a constant, never changes the layout of the sites after it. The input's own channel axis
starts the forward pass too, so that the values between the input and the first convolution
(an input normalisation) are laid out as the input. :func:`input_channel_axis` follows the first
convolution's input feature axis back to the model's input (:func:`way_back`), through ops that
keep the shape (each input-dependent operand of an elementwise op: ``x - mean``, ``x *
sigmoid(x)``), reshapes, transposes, broadcasts, reductions over other axes, pools that leave
the channel axis alone, pads, crops (``slice``, ``dynamic_slice``), flips (``rev``),
concatenations along any axis (CoordConv's coordinate channels), gathers whose axes map clearly
(``x[..., [2, 1, 0]]``, a nearest-neighbour resize), and the batch and free axes of products
(``jax.image.resize``'s interpolation matrices); where it is lost, :class:`WayBack` names the op.
:func:`channels_last_view` uses it to give the methods that perturb or draw NHWC images (the
faithfulness metrics, the report) a channels-first model as a function of NHWC images.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxplain.core._program import Lit, Program, trace

_FORGET = frozenset({"dot_general", "conv_general_dilated", "transpose", "reshape",
                     "broadcast_in_dim", "squeeze", "concatenate", "scan", "while", "cond",
                     "gather", "scatter", "scatter-add", "dynamic_slice", "dynamic_update_slice",
                     "sort", "argsort", "cumsum", "cumprod", "cummax", "rev"})
_REDUCE = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin"})
_WINDOWED = frozenset({"reduce_window_sum", "reduce_window_max", "reduce_window_min",
                       "reduce_window"})


def _landings(axis: int, old: tuple, new: tuple) -> list[int]:
    """The axes of shape `new` where `axis` of shape `old` may land after a reshape: those of
    the same size after the same number of elements (several only when the size is 1)."""
    size, before = old[axis], math.prod(old[:axis])
    return [b for b in range(len(new)) if new[b] == size and math.prod(new[:b]) == before]


def _reshaped(axis: int, old: tuple, new: tuple) -> int | None:
    """Where a channel axis lands after a reshape; None when it is split, merged or size 1."""
    hits = _landings(axis, old, new)
    return hits[0] if len(hits) == 1 and old[axis] > 1 else None


def _relayout(node) -> bool:
    """Whether `node` keeps its operand's elements in row-major order and only changes the
    shape: a ``reshape`` (without ``dimensions``, which transposes first), a ``squeeze``, or a
    ``broadcast_in_dim`` that only inserts axes of size 1."""
    eqn = node.eqn
    if node.prim == "reshape":
        return eqn.params.get("dimensions") is None
    if node.prim == "broadcast_in_dim":
        dims = tuple(eqn.params["broadcast_dimensions"])
        return (list(dims) == sorted(dims) and math.prod(eqn.invars[0].aval.shape)
                == math.prod(eqn.outvars[0].aval.shape))
    return node.prim == "squeeze"


def _block(node, axes: dict, blocks: dict) -> tuple[int, int] | None:
    """``(elements before, channels)``: where the channels of the node's output lie in its
    row-major layout, for a :func:`_relayout` of a value whose channel axis or block is known,
    or an op that keeps the whole shape of a value whose block is known (``blocks``, the values
    whose channel axis a reshape split or merged); None otherwise."""
    out_shape = tuple(node.eqn.outvars[0].aval.shape)
    ins = [(r, tuple(v.aval.shape)) for r, v in zip(node.ins, node.eqn.invars)
           if isinstance(r, int) and (r in axes or r in blocks)]
    if _relayout(node) and ins:
        ref, shape = ins[0]
        if ref in blocks:
            return blocks[ref]
        axis = axes[ref]
        return (math.prod(shape[:axis]), shape[axis]) if shape[axis] > 1 else None
    if node.prim in _FORGET or node.prim in _REDUCE or node.prim in _WINDOWED or node.prim == "pad":
        return None
    found = {blocks[r] for r, shape in ins if r in blocks and shape == out_shape}
    return found.pop() if len(found) == 1 else None


def _block_axis(block: tuple[int, int], shape: tuple) -> int | None:
    """The one axis of `shape` that holds the channels' block ``(elements before, channels)``;
    None when they are split over several axes or merged with others."""
    before, size = block
    hits = [b for b in range(len(shape)) if shape[b] == size and math.prod(shape[:b]) == before]
    return hits[0] if len(hits) == 1 else None


def _dense_axis(eqn, const_index: int) -> int | None:
    """The output axis of a ``dot_general`` that the constant operand's one free axis gives."""
    (contract, batch) = eqn.params["dimension_numbers"]
    ranks = [len(v.aval.shape) for v in eqn.invars]
    free = [[a for a in range(ranks[k]) if a not in contract[k] and a not in batch[k]]
            for k in (0, 1)]
    if len(free[const_index]) != 1:
        return None
    return len(batch[0]) + (len(free[0]) if const_index == 1 else 0)


def fixed_values(program: Program) -> frozenset:
    """The ids of the values that `program` builds from literals alone (``iota`` and arithmetic
    on it, as ``jax.image.resize`` builds its interpolation matrices): neither the input nor a
    stored array (the weights, or any other array the model closes over) goes into them."""
    fixed: set = set()
    for node in program.nodes:
        if all(isinstance(r, Lit) or r in fixed for r in node.ins):
            fixed.update(node.outs)
    return frozenset(fixed)


def resamples(node, program: Program, fixed: frozenset, axes: dict) -> bool:
    """True when `node` is a ``dot_general`` that resamples its one input-dependent operand: the
    other operand is a matrix built in the program (`fixed`, see :func:`fixed_values`) that
    maps one axis other than the channel axis (`axes`; the last axis when not known) to another
    size, as ``jax.image.resize`` interpolates along height and width. A square built matrix
    (``jnp.tril(jnp.ones((n, n)))``, a cumulative sum) or a built vector of weights (a weighted
    readout) is a linear layer. Such a product keeps the channel
    axis, is no linear layer, and no site.

    A product with a stored array (a weight) is a dense layer whatever axis it contracts (an
    MLP-Mixer's token mixing), and so is one with a built matrix over the channels."""
    if node.prim != "dot_general" or len(node.ins) != 2:
        return False
    dependent = [k for k, r in enumerate(node.ins) if isinstance(r, int) and r in program.depends]
    if len(dependent) != 1:
        return False
    k = dependent[0]
    if not isinstance(node.ins[1 - k], Lit) and node.ins[1 - k] not in fixed:
        return False
    (contract, batch) = node.eqn.params["dimension_numbers"]
    rank = len(node.eqn.invars[k].aval.shape)
    channel = axes.get(node.ins[k], rank - 1)
    matrix = node.eqn.invars[1 - k].aval.shape
    if len(matrix) != 2 or len(contract[k]) != 1 or batch[k]:
        return False
    (source,) = contract[1 - k]
    return matrix[source] != matrix[1 - source] and channel not in contract[k]


def _resampled_axis(node, k: int, axis: int | None) -> int | None:
    """Where the channel axis `axis` of operand `k` of a resampling (:func:`resamples`) lands in
    its output: ``dot_general`` puts the free axes of its first operand before those of its
    second."""
    if axis is None:
        return None
    (contract, _) = node.eqn.params["dimension_numbers"]
    free = [[a for a in range(len(v.aval.shape)) if a not in contract[j]]
            for j, v in enumerate(node.eqn.invars)]
    return free[k].index(axis) + (len(free[0]) if k == 1 else 0)


def _forward(node, axes: dict, program: Program, fixed: frozenset) -> int | None:
    eqn, prim = node.eqn, node.prim
    out_shape = tuple(eqn.outvars[0].aval.shape)
    ins = [(r, tuple(v.aval.shape)) for r, v in zip(node.ins, eqn.invars)]
    if prim == "conv_general_dilated":
        return eqn.params["dimension_numbers"].out_spec[1]
    if prim == "dot_general":
        const = [k for k, (r, _) in enumerate(ins) if not isinstance(r, int) or r not in program.depends]
        if resamples(node, program, fixed, axes):
            return _resampled_axis(node, 1 - const[0], axes.get(node.ins[1 - const[0]]))
        return _dense_axis(eqn, const[0]) if len(const) == 1 else None
    known = [(axes[r], shape) for r, shape in ins if isinstance(r, int) and r in axes]
    if not known:
        return None
    axis, shape = known[0]
    if prim == "transpose":
        return tuple(eqn.params["permutation"]).index(axis)
    if prim == "reshape":
        return _reshaped(axis, shape, out_shape) if _relayout(node) else None
    if prim == "broadcast_in_dim":
        return eqn.params["broadcast_dimensions"][axis]
    if prim == "squeeze":
        dims = eqn.params["dimensions"]
        return None if axis in dims else axis - sum(d < axis for d in dims)
    if prim in _REDUCE:
        dims = eqn.params["axes"]
        return None if axis in dims else axis - sum(d < axis for d in dims)
    if prim == "concatenate":
        return axis if len(out_shape) == len(shape) else None
    if prim == "rev":  # a flip (``x[..., ::-1]``, even of the channels) keeps every axis
        return axis
    if prim == "dynamic_slice" and node.ins[0] in axes:  # a crop that keeps the channels whole
        return axis if out_shape[axis] == shape[axis] else None
    if prim == "gather" and node.ins[0] in axes:  # ``x[:, [2, 1, 0]]``: where its axes map
        hits = [o for o in range(len(out_shape)) if _gathered(node, o) == axis]
        return hits[0] if len(hits) == 1 else None
    if prim in _FORGET or len(out_shape) != len(shape) or out_shape[axis] != shape[axis]:
        return None
    return axis


def channel_axes(program: Program) -> dict[int, int]:
    """``{value id: channel axis}`` for the input-dependent values whose channel axis is known:
    made by convolutions and dense layers, and the input's own (:func:`input_channel_axis`),
    so that what the model computes from the input before its first convolution (an input
    normalisation, an NCHW ``(x - mean) / std``) is laid out as the input."""
    seed = input_channel_axis(program)
    axes: dict[int, int] = {} if seed is None else {program.input_id: seed}
    blocks: dict[int, tuple[int, int]] = {}  # value id -> its channels' block (see `_block`)
    fixed = fixed_values(program)
    for node in program.nodes:
        if len(node.outs) != 1 or node.outs[0] not in program.depends:
            continue
        edited = program.edits.get(node.outs[0])
        axis = _forward(node, axes, program, fixed) if edited is None else edited[0]
        block = _block(node, axes, blocks) if axis is None and edited is None else None
        if block is not None:
            axis = _block_axis(block, tuple(node.eqn.outvars[0].aval.shape))
            if axis is None:
                blocks[node.outs[0]] = block
        if axis is not None:
            axes[node.outs[0]] = int(axis)  # jaxpr params may hold NumPy ints
    return axes


def _untouched(node, axis: int) -> bool:
    """Whether a pool (``reduce_window*``) leaves `axis` as it is: a window of 1 with stride 1
    and no padding or dilation there (a pool's channel axis)."""
    p = node.eqn.params
    ones = (1,) * len(p["window_dimensions"])
    return (p["window_dimensions"][axis] == 1 and p["window_strides"][axis] == 1
            and tuple(p["padding"][axis]) == (0, 0)
            and (p.get("base_dilation") or ones)[axis] == 1
            and (p.get("window_dilation") or ones)[axis] == 1)


def _kept(axis: int, dropped, rank: int) -> int:
    """The axis of a rank-`rank` operand that `axis` of the output is, when the op drops the
    operand's axes `dropped` (a reduction, a squeeze) and keeps the others in order."""
    return [a for a in range(rank) if a not in dropped][axis]


def _gathered(node, axis: int) -> int | None:
    """The axis of a ``gather``'s operand that `axis` of its output comes from, when that is
    clear: an offset axis is the operand's axis at the same place among those its slices keep;
    a batch axis of the indices picks along the one axis they index (``x[..., [2, 1, 0]]``,
    ``jnp.take``), when they have one batch axis and the slices are collapsed there."""
    dn = node.eqn.params["dimension_numbers"]
    if dn.operand_batching_dims:
        return None
    if axis in dn.offset_dims:
        return _kept(dn.offset_dims.index(axis), dn.collapsed_slice_dims,
                     len(node.eqn.invars[0].aval.shape))
    batch_axes = len(node.eqn.outvars[0].aval.shape) - len(dn.offset_dims)
    if batch_axes == 1 and len(dn.start_index_map) == 1 and (
            tuple(dn.collapsed_slice_dims) == tuple(dn.start_index_map)):
        return dn.start_index_map[0]
    return None


def _multiplied(node, axis: int) -> list[tuple[int, int]]:
    """The ``(operand, axis)`` pairs that `axis` of a ``dot_general``'s output comes from: its
    batch axes first (from both operands), then the free axes of its first operand, then those
    of its second (``jax.image.resize``'s products move the channel axis so)."""
    contract, batch = node.eqn.params["dimension_numbers"]
    free = [[a for a in range(len(v.aval.shape)) if a not in contract[k] and a not in batch[k]]
            for k, v in enumerate(node.eqn.invars)]
    if axis < len(batch[0]):
        return [(node.ins[k], batch[k][axis]) for k in (0, 1)]
    axis -= len(batch[0])
    k = 0 if axis < len(free[0]) else 1
    return [(node.ins[k], free[k][axis - k * len(free[0])])]


def _backward(node, axis: int) -> list[tuple[int, int]]:
    """The ``(input id, axis)`` pairs that `axis` of the node's output may come from: each
    operand of an elementwise op that has the output's size on `axis` (operands of size 1 there
    are broadcast along it), the operand of a broadcast, reshape, transpose, squeeze, reduction
    over other axes, pool leaving `axis` alone, pad, crop or flip, every operand of a
    concatenation, a ``gather``'s operand where its axes map clearly, the operands of a product
    (:func:`_multiplied`); none for other ops."""
    eqn, prim = node.eqn, node.prim
    out_shape = tuple(eqn.outvars[0].aval.shape)
    data = [(r, tuple(v.aval.shape)) for r, v in zip(node.ins, eqn.invars) if isinstance(r, int)]
    if not data:
        return []
    first, first_shape = data[0]
    if prim == "transpose":
        return [(first, eqn.params["permutation"][axis])]
    if prim == "reshape":
        return [(first, a) for a in _landings(axis, out_shape, first_shape)]
    if prim == "broadcast_in_dim":
        dims = tuple(eqn.params["broadcast_dimensions"])
        return [(first, dims.index(axis))] if axis in dims else []
    if prim == "squeeze":
        return [(first, _kept(axis, eqn.params["dimensions"], len(first_shape)))]
    if prim in _REDUCE:
        return [(first, _kept(axis, eqn.params["axes"], len(first_shape)))]
    if prim in _WINDOWED:
        return [(first, axis)] if _untouched(node, axis) else []
    if prim in ("pad", "slice", "dynamic_slice", "rev"):
        return [(first, axis)] if node.ins[0] == first else []
    if prim == "concatenate":
        return [(r, axis) for r, _ in data]
    if prim == "gather":
        source = _gathered(node, axis) if node.ins[0] == first else None
        return [] if source is None else [(first, source)]
    if prim == "dot_general":
        return [(r, a) for r, a in _multiplied(node, axis) if isinstance(r, int)]
    if prim in _FORGET:
        return []
    return [(r, axis) for r, shape in data if len(shape) == len(out_shape)
            and shape[axis] == out_shape[axis]
            and all(s in (1, o) for s, o in zip(shape, out_shape))]


def _made(node, axis: int, depends: frozenset) -> bool:
    """Whether `node` makes `axis` of its output rather than reading it from the input: one
    element there, a broadcast that adds it (``x[..., None]``, a grey volume read by a
    convolution), or an elementwise op broadcasting an input-dependent operand along it (a grey
    value times per-channel weights)."""
    out_shape = tuple(node.eqn.outvars[0].aval.shape)
    if out_shape[axis] == 1:
        return True
    if node.prim == "broadcast_in_dim":
        return axis not in node.eqn.params["broadcast_dimensions"]
    return node.prim not in _FORGET and any(
        isinstance(r, int) and r in depends and len(v.aval.shape) == len(out_shape)
        and v.aval.shape[axis] == 1 for r, v in zip(node.ins, node.eqn.invars))


@dataclasses.dataclass(frozen=True)
class WayBack:
    """Where the first convolution's input channel axis comes from in the model's input.

    Attributes:
        axes: the axes of the input that the ways back reach (one: the channel axis).
        lost: the primitives where a way back from the input ends, in the order met: the op
            reads the input but the search cannot tell where the channel axis came from.
    """

    axes: frozenset
    lost: tuple[str, ...]


def way_back(program: Program) -> WayBack:
    """Follow the first convolution's input feature axis back to the model's input, through
    every input-dependent operand (:func:`_backward`); a way that ends at a value the input
    does not feed (a weight, CoordConv's coordinates) or at an axis the model makes itself
    (:func:`_made`) is no loss."""
    producer = {ref: node for node in program.nodes for ref in node.outs}
    conv = next((node for node in program.nodes if node.prim == "conv_general_dilated"
                 and isinstance(node.ins[0], int)), None)
    if conv is None:
        return WayBack(frozenset(), ())
    found, lost, seen = set(), [], set()
    todo = [(conv.ins[0], conv.eqn.params["dimension_numbers"].lhs_spec[1])]
    while todo:
        ref, axis = todo.pop()
        if (ref, axis) in seen or ref not in program.depends:
            continue
        seen.add((ref, axis))
        if ref == program.input_id:
            found.add(int(axis))  # jaxpr params may hold NumPy ints
            continue
        node = producer[ref]
        ways = [(r, a) for r, a in _backward(node, axis) if r in program.depends]
        if not ways and not _made(node, axis, program.depends) and node.prim not in lost:
            lost.append(node.prim)
        todo.extend(ways)
    return WayBack(frozenset(found), tuple(lost))


def input_channel_axis(program: Program) -> int | None:
    """The channel axis of the model's input: the first convolution's input feature axis,
    followed back to the input (:func:`way_back`); None when there is no convolution or the way
    back is lost or ambiguous."""
    axes = way_back(program).axes
    return next(iter(axes)) if len(axes) == 1 else None


def image_channel_axis(f: Callable, x) -> int | None:
    """:func:`input_channel_axis` of `f` at the shape and dtype of `x`. At a batch of one the
    axes of size one (a grey NCHW image ``(1, 1, h, w)``) can leave the way back ambiguous; then
    `f` is traced again at a batch of two, where it is not (when `f` takes such a batch)."""
    from jaxplain.core._capture import program_of  # it imports this module, through _sites

    shape, dtype = tuple(jnp.shape(x)), jnp.result_type(x)
    axis = input_channel_axis(program_of(f, jax.ShapeDtypeStruct(shape, dtype))[0])
    if axis is None and shape and shape[0] == 1:
        try:
            axis = input_channel_axis(trace(f, jax.ShapeDtypeStruct((2,) + shape[1:], dtype)))
        except Exception:  # noqa: BLE001 - a model with a fixed batch: the answer stays unknown
            return None
    return axis


@dataclasses.dataclass(frozen=True)
class ChannelsLast:
    """``f`` as a function of channels-last inputs (images ``(n, h, w, c)``, signals, volumes),
    for a model that reads them with the channels on ``axis``. Equal for equal ``(f, axis)``, so that ``jit``'s
    caches, keyed by the function, hold across calls."""

    f: Callable
    axis: int

    def __call__(self, z):
        return self.f(jnp.moveaxis(z, -1, self.axis))


def channels_last_view(f: Callable, x) -> tuple[Callable, int | None]:
    """``(ChannelsLast(f, axis), axis)`` when `f` reads the image batch `x` (4-d) with its
    channels on an axis other than the last (``axis``, 1 for NCHW), else ``(f, None)``."""
    if jnp.ndim(x) != 4:
        return f, None
    axis = image_channel_axis(f, x)
    if axis is None or axis == 3:
        return f, None
    return ChannelsLast(f, axis), axis
