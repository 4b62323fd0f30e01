"""The strict and debugging JAX configurations that jaxplain must run under, by name: each a
function that returns the context manager setting it."""

import jax

STRICT = {
    "rank_promotion_raise": lambda: jax.numpy_rank_promotion("raise"),
    "dtype_promotion_strict": lambda: jax.numpy_dtype_promotion("strict"),
    "debug_infs": lambda: jax.debug_infs(True),
}
