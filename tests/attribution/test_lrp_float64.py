"""LRP-0 on exact zeros, and conservation to float64 precision on a bias-free ReLU CNN with an
average pool (the configuration documented in ``lrp`` and ``Composite``)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import data
from jaxplain.attribution import lrp
from jaxplain.lrp import AlphaBeta, Composite, Epsilon, Gamma, ZPlus


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), use_bias=False)(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Dense(16, use_bias=False)(x.reshape(x.shape[0], -1)))
        return nn.Dense(10, use_bias=False)(x)


def _setup(dtype):
    x = jnp.asarray(data.load_digits().x_test[:16], dtype)  # zero borders: z == 0 exactly
    net = _Net()
    params = jax.tree.map(lambda a: a.astype(dtype), net.init(jax.random.key(0), x))
    f = jp.as_function(net, params)
    y = f(x)
    t = y.argmax(-1)
    return f, x, t, y[jnp.arange(len(t)), t]


@pytest.mark.parametrize("rules", [Epsilon(0.0), Composite(default=Epsilon(0.0), stabilizer=0.0),
                                   ZPlus(0.0), AlphaBeta(2.0, 1.0, 0.0), Gamma(0.25, 0.0)],
                         ids=str)
def test_zero_stabilizer_gives_finite_relevance(rules):
    f, x, t, _ = _setup(jnp.float32)
    r = np.asarray(lrp(f, x, t, rules=rules))
    assert np.isfinite(r).all()


def test_lrp0_gives_a_zero_denominator_no_relevance():
    # the second unit's z is exactly 0: no relevance from it, the first keeps its share
    w = jnp.array([[1.0, 0.0], [3.0, 0.0]])
    f = lambda x: jax.nn.relu(x @ w) @ jnp.array([[1.0], [1.0]])  # noqa: E731
    r = lrp(f, jnp.array([[2.0, 2.0]]), 0, rules=Epsilon(0.0))
    np.testing.assert_allclose(np.asarray(r), [[0.25, 0.75]])


@pytest.mark.parametrize("eps", [0.0, 1e-12])
def test_float64_conservation_to_1e10(eps):
    with jax.enable_x64(True):
        f, x, t, logit = _setup(jnp.float64)
        r = lrp(f, x, t, rules=Composite(default=Epsilon(eps), stabilizer=eps),
                scale_by_logit=True)
        assert r.dtype == jnp.float64
        r = np.asarray(r)
        assert np.isfinite(r).all()
        np.testing.assert_allclose(r.sum((1, 2, 3)), np.asarray(logit), rtol=0, atol=1e-10)
