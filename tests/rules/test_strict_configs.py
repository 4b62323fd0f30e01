"""rules under strict JAX configurations: the same items and rules as under the defaults."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain.rules import activations, mine
from tests._strict import STRICT
from tests.rules._planted import planted

W = jnp.asarray(np.random.default_rng(0).normal(size=(3, 3, 1, 4)), jnp.float32)
X = np.random.default_rng(1).random((24, 6, 6, 1)).astype(np.float32)


def _conv_relu(x):
    h = jax.lax.conv_general_dilated(x, W, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.max(jax.nn.relu(h), axis=(1, 2))


def _run():
    bins = activations(_conv_relu, X, ["relu"], locality=["relu"], conv_quantile=0.7)
    layers = dict(zip("ab", planted(0, n=200, m_a=8, m_b=12, rules=2)[:2]))
    robust = mine(layers, labels=np.arange(200) % 3)
    # Exact tails and a usage floor (min_tail_frac) with two scan phases (k_tail >= 8).
    exact = mine(layers, tail_mode="exact", min_tail_frac=0.5, k_tail=8)
    return bins["relu"], robust, exact


@pytest.mark.parametrize("config", list(STRICT))
def test_activations_and_mine_run_and_agree_with_the_defaults(config):
    # Were: rank "raise" refused kk * u ((k,) with (B, k)) in the kernel's scan step, strict
    # promotion min_tail_frac * j (a Python float with int64), debug_infs the +inf gain of
    # heads without a valid rule.
    want = _run()
    with STRICT[config]():
        got = _run()
    np.testing.assert_array_equal(got[0].items, want[0].items)
    np.testing.assert_array_equal(got[0].thresholds, want[0].thresholds)
    for g, w in zip(got[1:], want[1:]):
        assert len(w.rules) > 0
        assert [str(r) for r in g.rules] == [str(r) for r in w.rules]
        np.testing.assert_array_equal([float(r.gain) for r in g.rules],
                                      [float(r.gain) for r in w.rules])
