"""The strict and debugging JAX configurations that jaxplain must run under, by name: each a
function that returns the context manager setting it. Rank promotion "raise" and dtype
promotion "strict" are set at once (a broadcast fails with a ValueError, a promotion with a
TypePromotionError), as each configuration compiles everything afresh."""

import contextlib

import jax


@contextlib.contextmanager
def strict_promotion():
    with jax.numpy_rank_promotion("raise"), jax.numpy_dtype_promotion("strict"):
        yield


STRICT = {
    "strict_promotion": strict_promotion,
    "debug_infs": lambda: jax.debug_infs(True),
}
