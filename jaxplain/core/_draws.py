"""Whether a traced model draws random numbers: a stochastic layer left on (a Dropout run through
a call-time ``train=True``), whose key is a constant of the function, so every call repeats one
draw."""

from __future__ import annotations

import weakref

from jax.extend.core import jaxprs_in_params

from jaxplain.core._program import EDIT_MARK, Program

# The primitives that draw random bits: `jax.random`'s draws (whatever the key's
# implementation) and the `lax` generators.
_DRAWS = frozenset({"random_bits", "threefry2x32", "rng_bit_generator", "rng_uniform"})
# program -> whether it draws; weak, so that the answer goes with the program
_FOUND: "weakref.WeakKeyDictionary[Program, bool]" = weakref.WeakKeyDictionary()


class StochasticModelWarning(UserWarning):
    """The model draws random numbers (a Dropout or other stochastic layer left on): its key is
    a constant of the function, so its outputs are those of one fixed draw. Filter it by this
    category."""

    def __init__(self, message: str = (
            "The model draws random numbers: a Dropout or other stochastic layer is left on, "
            "e.g. through a call-time flag such as train=True, which wins over as_function's "
            "evaluation mode. Its key is a constant of the model function, so every call "
            "repeats one fixed draw (the same dropout mask): its outputs, and so every "
            "explanation of them, are those of that one draw, not of the model in inference "
            "mode. Pass the flag, e.g. jaxplain.as_function(model, train=False), or turn the "
            "layer off (model.eval() for a Flax NNX model whose __call__ does not override it, "
            "eqx.nn.inference_mode(model) for Equinox). Draws that are constants on purpose "
            "(weights the function draws from a fixed key) are fine: filter this warning by "
            "its category.")):
        super().__init__(message)


def draws_random(program: Program) -> bool:
    """True when `program` draws random bits, inside its loops and branches too, outside the
    value of an intervention (noise an edit adds is the caller's choice); cached per program."""
    found = _FOUND.get(program)
    if found is None:
        found = _FOUND[program] = any(
            not any(part.endswith(EDIT_MARK) for part in node.stack) and _draws(node.eqn)
            for node in program.nodes)
    return found


def _draws(eqn) -> bool:
    """Whether the equation `eqn` draws random bits, itself or in a jaxpr it holds (a loop's
    body, a branch), leaving out those inside an intervention's value."""
    if eqn.primitive.name in _DRAWS:
        return True
    return any(_draws(inner) for jaxpr in jaxprs_in_params(eqn.params) for inner in jaxpr.eqns
               if EDIT_MARK not in str(inner.source_info.name_stack))
