"""Code-length primitives against the spec's float64 test vectors (spec §3.2, §9)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain.rules import _codes
from tests.rules import _reference as ref


@pytest.mark.parametrize("k, bits", [(1, 1.518567), (2, 2.518567), (10, 7.364973),
                                     (100, 12.880434), (1000, 17.321872)])
def test_universal_code(k, bits):
    assert _codes.universal(k) == pytest.approx(bits, abs=1e-6)


@pytest.mark.parametrize("n, bits", [(0, 0.0), (1, 1.0), (2, 1.321928), (5, 1.811635),
                                     (10, 2.220397), (100, 3.723554), (1000, 5.332823),
                                     (10**4, 6.977270), (10**5, 8.632994)])
def test_regret(n, bits):
    assert _codes.regret(n) == pytest.approx(bits, abs=1e-6)


def test_regret_table_meets_asymptotic_and_exact_series():
    # Table (exact series) and the asymptotic expansion agree where they meet, and the
    # reference's independent loop agrees with both.
    n = _codes.REGRET_TABLE_SIZE
    assert abs(_codes.regret(n) - float(_codes._regret_asymptotic(n))) < 1e-12
    for m in (3, 77, 4096, 5000, 15000):
        assert _codes.regret(m) == pytest.approx(ref.reg(m), abs=1e-11)


def test_log_binomial():
    assert _codes.log_binomial(1000, 100) == pytest.approx(464.422703, abs=1e-6)
    assert _codes.log_binomial(50000, 5000) == pytest.approx(23442.386052, abs=1e-6)
    assert _codes.log_binomial(7, 0) == _codes.log_binomial(7, 7) == 0.0
    with pytest.raises(ValueError, match="0 <= k <= n"):
        _codes.log_binomial(5, 6)


def test_device_code_lengths_match_host():
    ns = np.array([0, 1, 5, 4096, 4097, 70_000, 3_000_000])
    with jax.enable_x64(True):
        reg = np.asarray(_codes.regret_device(jnp.asarray(_codes.regret_table()),
                                              jnp.asarray(ns)))
        lb = np.asarray(_codes.lb_lgamma(jnp.asarray(ns), jnp.asarray(ns // 3)))
        table = jnp.asarray(_codes.log2_factorial_table(100))
        lbt = np.asarray(_codes.lb_table(table, jnp.asarray(100), jnp.arange(101)))
    np.testing.assert_allclose(reg, [_codes.regret(int(v)) for v in ns], rtol=0, atol=1e-10)
    np.testing.assert_allclose(lb, [_codes.log_binomial(int(v), int(v) // 3) for v in ns],
                               rtol=1e-13)
    np.testing.assert_allclose(lbt, [math.comb(100, k) and math.log2(math.comb(100, k))
                                     for k in range(101)], atol=1e-9)
