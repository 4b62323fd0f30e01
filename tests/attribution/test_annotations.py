"""The jaxtyping annotations of every attribution method hold on real calls: run through
``jaxtyping.jaxtyped`` with beartype, the arguments and the returned array must match the
documented dtypes and shapes (``Float[Array, "batch *feature"]``: shaped like ``x``)."""

import jax.numpy as jnp
import pytest
from beartype import beartype
from jaxtyping import TypeCheckError, jaxtyped

from tests.attribution.test_registry import F, REGISTRY, T, X


def checked(method):
    return jaxtyped(typechecker=beartype)(method)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_annotations_hold(name):
    method, opts, _ = REGISTRY[name]
    out = checked(method)(F, jnp.asarray(X), jnp.asarray(T), **opts)
    assert out.shape[0] == X.shape[0]


def test_the_check_can_fail():
    """A target whose batch differs from x's violates the shared ``batch`` dimension."""
    method, opts, _ = REGISTRY["gradient"]
    with pytest.raises(TypeCheckError):
        checked(method)(F, jnp.asarray(X), jnp.asarray(T[:2]), **opts)
