"""concepts under strict JAX configurations: the same results as under the defaults."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxplain import concepts
from tests._strict import STRICT

RNG = np.random.default_rng(0)
W = jnp.asarray(RNG.normal(size=(3, 3, 1, 4)), jnp.float32)
HEAD = jnp.asarray(RNG.normal(size=(4, 3)), jnp.float32)
X = jnp.asarray(RNG.random((24, 6, 6, 1)), jnp.float32)


def _model(x):
    """conv (3x3, 1 -> 4) -> relu -> global max -> 3 logits; no broadcasting of its own."""
    h = jax.lax.conv_general_dilated(x, W, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.max(jax.nn.relu(h), axis=(1, 2)) @ HEAD


def _run():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # tiny sets: low held-out accuracy
        r = concepts.tcav(_model, X[:6], 0, site="relu", concept=X[:8] + 0.5,
                          randoms=[X[8:16], X[16:24] * 0.5, X[4:12] * 0.8], steps=10)
    v = concepts.cav(_model, X[:8] + 0.5, X[8:16], site="relu", steps=10)
    return dict(tcav=r, cav=v, t=concepts.ttest_ind(jnp.array([0.1, 0.5, 0.9]),
                                                    jnp.array([0.2, 0.3, 0.8])),
                dissect=concepts.dissect(_model, X, X > 0.5, site="relu", quantile=0.9))


@pytest.mark.parametrize("config", list(STRICT))
def test_tcav_cav_ttest_and_dissect_run_and_agree_with_the_defaults(config):
    # Were: rank "raise" refused the fit's centring (a - mean: (n, d) with (d,)) and iou's
    # thresholds ((b, h, w, units) > (units,)); strict promotion the held-out accuracy (float
    # rows @ bool hits); debug_infs the t-test, which built sign(diff) * inf for every pair.
    want = _run()
    assert np.isfinite(float(want["tcav"].statistic))  # varying scores: an ordinary t-test
    with STRICT[config]():
        got = _run()
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(g, w)


def test_ttest_under_debug_infs_matches_scipy_and_keeps_the_constant_cases():
    a, b = np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.3, 0.8])
    with jax.debug_infs(True):
        t, p = concepts.ttest_ind(jnp.asarray(a), jnp.asarray(b))
        equal = concepts.ttest_ind(jnp.ones(3), jnp.ones(4))  # no inf: t = 0, p = 1
    want = stats.ttest_ind(a, b)
    np.testing.assert_allclose([t, p], [want.statistic, want.pvalue], rtol=1e-5)
    assert (float(equal[0]), float(equal[1])) == (0.0, 1.0)
    for sign in (1.0, -1.0):  # constant samples apart: t = +-inf, p = 0 (as scipy)
        t, p = concepts.ttest_ind(sign * jnp.ones(3), jnp.zeros(4))
        assert float(t) == sign * np.inf and float(p) == 0.0
