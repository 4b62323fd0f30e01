"""``extract`` and ``evaluate`` run on the host: a clear refusal under ``jit``, ``vmap`` or
``grad``.

Both read values back between compiled stages (the region's labels, the chosen candidate, the
reported floats), which a trace cannot give; ``apply`` and ``fidelity`` are pure and do run
inside a transformation.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxplain.core._capture import program_of


def traced(tree) -> bool:
    """True when a leaf of ``tree`` is a JAX tracer (a value of an enclosing transformation)."""
    return any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(tree))


def under_jit() -> bool:
    """True while ``jax.jit`` traces: every new array, a constant's too, is then a tracer."""
    return traced(jnp.zeros(()))


def closes_over_tracers(f: Callable, x: jax.Array) -> bool:
    """True when ``f`` reads traced values besides ``x`` (parameters of an enclosing ``vmap``
    or ``grad``): the constants of its program at ``x``'s shape are then tracers (the
    kernel's cached trace, which extract reads anyway: no extra trace)."""
    return traced(tuple(program_of(f, x, warn=False)[0].consts.values()))


_ROLES = {"extract": "is a host-side search (it reads the region's labels and its candidates "
                     "back between compiled stages)",
          "evaluate": "is a host-side report (it returns Python floats)"}


def refuse(name: str, what: str) -> None:
    """Raises the TypeError of ``name`` (``"extract"`` or ``"evaluate"``) called under a
    trace; ``what`` says what was traced."""
    raise TypeError(
        f"jaxplain.subnet.{name} {_ROLES[name]}; call it outside jit, vmap or grad (got "
        f"{what}). jaxplain.subnet.apply(f, sub) and fidelity(f, sub, x) are pure and run "
        "inside jit; for weights that change, build a new f and call extract again.")


def check_arguments(name: str, arrays) -> None:
    """Refuses a call inside ``jit`` or with traced ``arrays`` (a pytree: the region, keys,
    labels, a sub-network)."""
    if under_jit():
        refuse(name, "a call inside jit")
    if traced(arrays):
        refuse(name, "traced arguments")
