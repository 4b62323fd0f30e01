"""Student's two-sample t-test (pooled variance), in JAX."""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.special import betainc
from jaxtyping import Array, ArrayLike, Float


def ttest_ind(a: Float[ArrayLike, " n"], b: Float[ArrayLike, " m"]) -> tuple[Array, Array]:
    """Two-sided two-sample t-test with pooled variance (as ``scipy.stats.ttest_ind``).

    ``t = (mean(a) - mean(b)) / (s_p sqrt(1/n + 1/m))`` with ``n + m - 2`` degrees of freedom;
    the p-value is ``I_{df/(df+t^2)}(df/2, 1/2)`` (regularized incomplete beta). When both
    samples are constant, ``t`` is +-inf (p = 0) if the means differ and 0 (p = 1) otherwise.

    Returns:
        ``(t, p)``.
    """
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"each sample needs at least 2 values, got {n} and {m}")
    df = n + m - 2
    diff = jnp.mean(a) - jnp.mean(b)
    pooled = ((n - 1) * jnp.var(a, ddof=1) + (m - 1) * jnp.var(b, ddof=1)) / df
    se = jnp.sqrt(pooled * (1.0 / n + 1.0 / m))
    # No inf is built unless t is one (both samples constant, means apart), so the test runs
    # under jax_debug_infs; the p-value of a constant pair is set directly (0 or 1).
    spread = se > 0
    t = diff / jnp.where(spread | (diff != 0), se, 1.0)
    x = jnp.where(spread, df / (df + jnp.where(spread, t, 0.0) ** 2),
                  (diff == 0).astype(t.dtype))
    p = betainc(df / 2.0, 0.5, x)
    return t, p
