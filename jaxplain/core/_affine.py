"""The affine stem of a model: what it computes from its input before the first non-affine step.

Most networks begin with an affine map of the input: a convolution or dense layer and its bias,
an inference-mode BatchNorm, paddings and reshapes. On a line of inputs ``b + a (x - b)`` such
a stem takes the values ``h(b) + a (h(x) - h(b))``, and the transpose of its Jacobian is the
same at every point, so a method that evaluates the model at many points of one line
(integrated gradients) can run the stem twice instead of once per point, forward and backward.
:func:`affine_stem` splits a traced program at its frontier: the values affine in the input that
a non-affine equation (or the output) reads.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxplain.core._program import Lit, Program, trace

# Affine in any mix of affine and constant operands.
_MIXED = frozenset({"add", "sub", "add_any", "concatenate", "pad"})
# Linear in the first operand; the others must be constant.
_FIRST = frozenset({
    "reshape", "transpose", "broadcast_in_dim", "squeeze", "expand_dims", "rev", "slice",
    "dynamic_slice", "gather", "convert_element_type", "copy", "neg", "reduce_sum", "cumsum",
    "reduce_window_sum", "div",
})
# Bilinear: affine when exactly one operand is.
_ONE_OF = frozenset({"mul", "dot_general", "conv_general_dilated"})
# The equations whose cost the split saves; without one in the stem there is nothing to gain.
_COSTLY = frozenset({"dot_general", "conv_general_dilated"})


def _stays_affine(prim: str, affine: list[bool]) -> bool:
    """Whether an equation whose operands are affine (True) or constant (False) is affine."""
    if prim in _MIXED:
        return True
    if prim in _FIRST:
        return not any(affine[1:])
    if prim in _ONE_OF:
        return sum(affine) == 1
    if prim == "select_n":  # a constant predicate picks between affine or constant cases
        return not affine[0]
    return False


@dataclasses.dataclass(frozen=True, eq=False)
class AffineStem:
    """A program split as ``f(x) = tail(*head(x))`` with `head` affine in ``x``.

    ``head(x)`` returns the frontier values (a tuple of arrays, shapes as traced); ``tail``
    takes them and returns `f`'s output pytree. Both are plain JAX functions.
    """

    program: Program
    frontier: tuple[int, ...]
    in_head: frozenset  # indices of the equations that compute affine values

    def head(self, x: jax.Array) -> tuple:
        env = self._evaluate({self.program.input_id: x}, lambda i: i in self.in_head)
        return tuple(env[r] for r in self.frontier)

    def tail(self, *values: jax.Array) -> Any:
        env = self._evaluate(dict(zip(self.frontier, values)), lambda i: i not in self.in_head)
        flat = [r.value if isinstance(r, Lit) else env[r] for r in self.program.output_ids]
        return jax.tree_util.tree_unflatten(self.program.out_tree, flat)

    def _evaluate(self, seed: dict, wanted) -> dict:
        """The values of the constant equations and of those `wanted` (by index), from `seed`."""
        env = {**self.program.consts, **seed}
        for i, node in enumerate(self.program.nodes):
            if wanted(i) or not self._depends(node):
                outs = node.bind(*[r.value if isinstance(r, Lit) else env[r] for r in node.ins])
                env.update(zip(node.outs, outs))
        return env

    def _depends(self, node) -> bool:
        return any(isinstance(r, int) and r in self.program.depends for r in node.ins)


def affine_stem(f, spec: jax.ShapeDtypeStruct) -> AffineStem | None:
    """`f` traced at `spec` and split after its affine stem, or None when the stem holds no
    convolution or matrix product (nothing to save) or the input feeds a non-affine step.

    Args:
      f: a model ``x -> output pytree``.
      spec: the input's shape and dtype.

    Returns:
      An :class:`AffineStem` with ``f(x) == tail(*head(x))`` (up to rounding), or None.
    """
    program = trace(f, spec)
    affine = {program.input_id}
    in_head, frontier = set(), []

    def read_by_nonaffine(refs):
        frontier.extend(r for r in refs if isinstance(r, int) and r in affine and r not in frontier)

    for i, node in enumerate(program.nodes):
        refs = [r for r in node.ins if isinstance(r, int)]
        if not any(r in program.depends for r in refs):
            continue
        flags = [isinstance(r, int) and r in affine for r in node.ins]
        nonaffine_in = any(r in program.depends and r not in affine for r in refs)
        floating = all(jnp.issubdtype(program.avals[r].dtype, jnp.floating) for r in node.outs)
        if not nonaffine_in and floating and _stays_affine(node.prim, flags):
            affine.update(node.outs)
            in_head.add(i)
        else:
            read_by_nonaffine(node.ins)
    read_by_nonaffine(program.output_ids)
    if frontier == [program.input_id] or not any(
            program.nodes[i].prim in _COSTLY for i in in_head):
        return None
    return AffineStem(program, tuple(frontier), frozenset(in_head))
