"""SignalTakeAll picks the gate of ``gate * signal`` from the program (the sigmoid's output,
through layout ops), the same for every example: a signal whose values happen to lie in [0, 1]
(an image, a post-sigmoid feature) is not taken for the gate."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution
from jaxplain.lrp import Composite, Epsilon, SignalTakeAll

GATED = Composite(default=Epsilon(0.0), stabilizer=0.0, products=SignalTakeAll())
RNG = np.random.default_rng(0)
W_SIGNAL = RNG.normal(size=(3, 4))  # reads features 0-2
W_GATE = RNG.normal(size=(3, 4))    # reads features 3-5
W_OUT = RNG.normal(size=(4, 2))
X = RNG.normal(size=(6, 6))
K = jax.random.split(jax.random.key(0), 2)


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


def _glu(gate_fn=jax.nn.sigmoid, signal_first=True):
    """``relu(x_s Ws) * gate(x_g Wg)`` on disjoint features, signal first as ``F.glu``."""
    def f(x):
        signal, gate = jax.nn.relu(x[:, :3] @ W_SIGNAL), gate_fn(x[:, 3:] @ W_GATE)
        return (signal * gate if signal_first else gate * signal) @ W_OUT
    return f


def _batch():
    """Examples whose signal lies in [0, 1] and examples whose signal does not."""
    x = X.copy()
    x[:, :3] = np.abs(x[:, :3])  # a signal that is not all 0 (a dead ReLU passes nothing on)
    x[:3, :3] *= 0.05  # small inputs: the signal in [0, 1]
    x[3:, :3] *= 3.0
    signal = np.maximum(x[:, :3] @ W_SIGNAL, 0)
    unit = ((signal >= 0) & (signal <= 1)).all(1)
    assert unit.any() and not unit.all()
    return jnp.asarray(x)


@pytest.mark.parametrize("gate_fn, signal_first", [(jax.nn.sigmoid, True),
                                                    (jax.nn.sigmoid, False),
                                                    (jax.nn.hard_sigmoid, True)])
def test_the_signal_takes_all_relevance_in_every_example(gate_fn, signal_first):
    f, x = _glu(gate_fn, signal_first), _batch()
    t = jnp.argmax(f(x), -1)
    relevance = np.asarray(attribution.lrp(f, x, t, rules=GATED))
    np.testing.assert_allclose(relevance[:, 3:], 0.0, atol=1e-12)      # the gate's features
    np.testing.assert_allclose(relevance.sum(1), 1.0, atol=1e-10)     # conserved (LRP-0)
    # By hand: the products u = relu(z) * gate take R_u = u W_out[:, t] / y_t (LRP-0), the
    # signal all of it, through the ReLU to z = x_s W_s, then LRP-0 to x_s.
    x, t = np.asarray(x), np.asarray(t)
    z = x[:, :3] @ W_SIGNAL
    u = np.maximum(z, 0) * np.asarray(gate_fn(x[:, 3:] @ W_GATE))
    r_u = u * W_OUT[:, t].T / np.asarray(f(x))[np.arange(len(t)), t][:, None]
    expected = x[:, :3] * ((r_u / np.where(z == 0, 1.0, z)) @ W_SIGNAL.T)
    np.testing.assert_allclose(relevance[:, :3], expected, rtol=1e-9, atol=1e-12)


def test_a_product_rule_of_seven_arguments_is_told_the_gates_and_one_of_six_still_works():
    seen = []

    @dataclasses.dataclass(frozen=True)
    class Told:
        def product(self, op, a, b, y, g, pullback, gates):
            seen.append(gates)
            return pullback(g)

    @dataclasses.dataclass(frozen=True)
    class Six:
        def product(self, op, a, b, y, g, pullback):
            return tuple(0.5 * c for c in pullback(g))

    def se(x):  # an SE-style gate through layout ops, broadcast over positions
        h = jnp.tanh(x)
        return h * jax.nn.sigmoid(h.mean((1, 2)))[:, None, None, :]

    x = jax.random.normal(K[1], (2, 3, 3, 4), jnp.float64)
    for f, v, want in [(se, x, (False, True)), (_glu(), _batch(), (False, True)),
                       (_glu(signal_first=False), _batch(), (True, False))]:
        seen.clear()
        told = jax.grad(lambda v: jp.rewrite_backward(f, Told())(v).sum())(v)
        np.testing.assert_allclose(told, jax.grad(lambda v: f(v).sum())(v), rtol=1e-12)
        assert seen == [want]
    half = jax.grad(lambda v: jp.rewrite_backward(se, Six())(v).sum())(x)  # all through y
    np.testing.assert_allclose(half, 0.5 * jax.grad(lambda v: se(v).sum())(x), rtol=1e-12)


def test_an_se_block_on_post_sigmoid_features_conserves_relevance():
    # both factors are sigmoid outputs: the one broadcast over positions is the gate
    w1, w2 = RNG.normal(size=(3, 3, 1, 4)), RNG.normal(size=(4, 4))

    def se(x, x_gate):  # the signal computed from x, the gate from x_gate
        def conv(v):
            return jax.lax.conv_general_dilated(v, w1, (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))
        gate = jax.nn.sigmoid(jax.nn.relu(conv(x_gate)).mean((1, 2)) @ w2)
        return (jax.nn.sigmoid(conv(x)) * gate[:, None, None, :]).mean((1, 2)) @ W_OUT

    x = jax.random.uniform(K[0], (3, 5, 5, 1), jnp.float64)
    f = lambda x: se(x, x)  # noqa: E731
    t = jnp.argmax(f(x), -1)
    relevance = attribution.lrp(f, x, t, rules=GATED)
    np.testing.assert_allclose(np.asarray(relevance.sum((1, 2, 3))), 1.0, atol=1e-10)
    # a peer: the gate's branch reads its own copy of x, which gets no relevance
    apart = attribution.lrp(lambda v: se(v[..., :1], v[..., 1:]), jnp.concatenate([x, x], -1),
                            t, rules=GATED)
    np.testing.assert_allclose(np.asarray(apart[..., 1]), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(relevance), np.asarray(apart[..., :1]), rtol=1e-9,
                               atol=1e-12)


def test_an_equinox_lstm_conserves_relevance_through_its_gates():
    cell = eqx.nn.LSTMCell(3, 4, use_bias=False, dtype=jnp.float64, key=K[0])

    def f(x):  # two steps: f * c, i * g and o * tanh(c) all multiply input-dependent values
        h = c = jnp.zeros((x.shape[0], 4), jnp.float64)
        for step in range(x.shape[1]):
            h, c = jax.vmap(cell)(x[:, step], (h, c))
        return h @ W_OUT

    x = jax.random.normal(K[1], (4, 2, 3), jnp.float64)
    y = jax.jit(f)(x)  # one compiled call, not eager op by op
    t = jnp.argmax(y, -1)
    relevance = attribution.lrp(f, x, t, rules=GATED, scale_by_logit=True)
    np.testing.assert_allclose(np.asarray(relevance.sum((1, 2))),
                               np.asarray(y[jnp.arange(4), t]), rtol=1e-8)
