"""Reading jaxprs in tests."""

import jax
import jax.extend


def primitives(jaxpr) -> set:
    """The primitive names of `jaxpr` (a Jaxpr or ClosedJaxpr) and of the jaxprs inside it
    (loop bodies, branches, nested calls)."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            names |= primitives(sub)
    return names
