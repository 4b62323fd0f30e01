"""A NaN in a concrete `x` is refused by every attribution method, naming the examples, before
any tracing (DESIGN §3: never a silent NaN; the metrics refuse it the same way); an `x` traced
by the user's jit cannot be checked and passes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A
from jaxplain import metrics as M
from tests.attribution import test_attention as attention
from tests.attribution.test_registry import F, REGISTRY, T, X

NAN_X = jnp.asarray(X).at[1, 2, 3, 0].set(jnp.nan)
NAN_TOKENS = attention.X.at[2, 0, 1].set(jnp.nan)

CALLS = {name: (lambda x, m=method, o=opts: m(F, x, T, **o))
         for name, (method, opts, _) in REGISTRY.items()}
CALLS["completeness_delta"] = lambda x: A.completeness_delta(F, x, T, jnp.ones(x.shape))


@pytest.mark.parametrize("name", sorted(CALLS))
def test_nan_in_x_is_refused_naming_the_example(name):
    with pytest.raises(ValueError, match=r"x contains NaN \(examples \[1\] of 4\)"):
        CALLS[name](NAN_X)


@pytest.mark.parametrize("call", [
    lambda x: A.attention_rollout(attention.model, x),
    lambda x: A.gradient_weighted_rollout(attention.model, x, attention.TARGET),
], ids=["attention_rollout", "gradient_weighted_rollout"])
def test_nan_in_tokens_is_refused(call):
    with pytest.raises(ValueError, match=r"x contains NaN \(examples \[2\] of 3\)"):
        call(NAN_TOKENS)


def test_attribution_refuses_what_the_metrics_refuse():
    """The same input is refused by both families, with the same words."""
    with pytest.raises(ValueError, match="x contains NaN"):
        M.completeness(F, NAN_X, T, jnp.ones(X.shape))
    with pytest.raises(ValueError, match="x contains NaN"):
        A.completeness_delta(F, NAN_X, T, jnp.ones(X.shape))


def test_numpy_x_and_closed_over_x_are_checked():
    with pytest.raises(ValueError, match="x contains NaN"):
        A.gradient(F, np.asarray(NAN_X), T)
    with pytest.raises(ValueError, match="x contains NaN"):  # concrete inside the user's jit
        jax.jit(lambda: A.gradient(F, NAN_X, T))()


def test_traced_x_is_not_checked_and_clean_rows_are_unchanged():
    """Inside the user's jit `x` is a tracer: no error, and the examples without NaN get the
    maps they get eagerly (the model treats examples independently)."""
    traced = jax.jit(lambda x: A.gradient(F, x, T))(NAN_X)
    clean = A.gradient(F, X, T)
    rows = np.array([0, 2, 3])
    np.testing.assert_allclose(np.asarray(traced)[rows], np.asarray(clean)[rows], rtol=1e-6)


def test_integer_ids_are_not_checked():
    """Integer inputs hold no NaN: the check is skipped, not failed."""
    ids = jnp.array([[0, 2, 1], [1, 1, 0]])
    table = jax.random.normal(jax.random.key(0), (3, 4))
    f = lambda i: table[i].sum(axis=1)  # noqa: E731 - (n, 3) ids -> (n, 4) logits
    np.testing.assert_array_equal(A.feature_ablation(f, ids, 0, baseline=0).shape, ids.shape)


def test_infinities_and_overflowing_sums_are_not_mistaken_for_nan():
    """The check sums `x` first (NaN there if `x` holds NaN, or +inf and -inf, or overflows
    both ways) and only then looks for NaN: infinities pass, as they pass the metrics."""
    w = jnp.ones((2, 3))
    f = lambda x: jnp.clip(x, -1.0, 1.0) @ w  # noqa: E731
    for x in (jnp.array([[jnp.inf, -jnp.inf]]), jnp.array([[3e38, 3e38], [-3e38, -3e38]])):
        np.testing.assert_array_equal(A.gradient(f, x, 0), jnp.zeros(x.shape))
        assert M.deletion(f, x, 0, jnp.ones(x.shape), steps=2, output="logit").area.shape == (
            x.shape[0],)
