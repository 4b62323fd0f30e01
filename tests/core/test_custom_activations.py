"""Activations under a custom derivative or a name: a ``custom_jvp`` of one activation (a user's
tanh, ``jnp.logaddexp(z, 0)``) is that activation to the rules; any other elementwise
nonlinearity under one warns; a jit is taken for the ``jax.nn`` activation it is named after
only when its body is that activation; ``lax.switch`` on a literal index is its branch."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution, lrp

_LRP0 = lrp.Composite(default=lrp.Epsilon(0.0), stabilizer=0.0)


@jax.custom_jvp
def _tanh(z):  # a user's tanh with its exact derivative
    return jnp.tanh(z)


@_tanh.defjvp
def _tanh_jvp(primals, tangents):
    y = jnp.tanh(primals[0])
    return y, (1 - y**2) * tangents[0]


@jax.custom_jvp
def _softplus_by_hand(z):  # no activation jaxplain has rules for
    return jnp.log1p(jnp.exp(z))


_softplus_by_hand.defjvp(lambda p, t: (_softplus_by_hand(p[0]), jax.nn.sigmoid(p[0]) * t[0]))


@jax.custom_vjp
def _ste_relu(z):  # a ReLU whose backward pass is straight through
    return jnp.maximum(z, 0.0)


_ste_relu.defvjp(lambda z: (jnp.maximum(z, 0.0), None), lambda _, g: (g,))


def _setup():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    w1 = np.asarray(jax.random.normal(k1, (6, 8)), np.float64)
    w2 = np.asarray(jax.random.normal(k2, (8, 3)), np.float64) / 3
    x = np.asarray(jax.random.normal(k3, (4, 6)), np.float64)
    return w1, w2, x, np.array([0, 1, 2, 0])


def _caught(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = call()
    return out, [str(w.message) for w in caught]


@pytest.mark.parametrize("act, h", [
    (_tanh, np.tanh),
    (lambda z: jnp.logaddexp(z, 0.0), lambda z: np.logaddexp(z, 0.0)),
], ids=["custom_jvp_tanh", "logaddexp"])
def test_a_custom_jvp_activation_gets_the_rules_of_that_activation(act, h):
    with jax.enable_x64(True):
        w1, w2, x, t = _setup()
        base = np.full_like(x, 0.3)
        f = lambda v: act(v @ w1) @ w2  # noqa: E731
        deeplift, messages = _caught(lambda: attribution.deeplift(f, x, t, baseline=base))
        relevance, more = _caught(lambda: attribution.lrp(f, x, t, rules=_LRP0))
        assert messages + more == []
        assert [s.kind for s in jp.sites(f, x)] == ["linear", "activation", "linear"]
        deeplift, relevance = np.asarray(deeplift), np.asarray(relevance)
    # float64 references: DeepLIFT's rescale multiplier, and LRP-0 passing relevance through h
    z, z0 = x @ w1, base @ w1
    multiplier = (h(z) - h(z0)) / (z - z0)
    expected = (x - base) * ((multiplier * w2[:, t].T) @ w1.T)
    np.testing.assert_allclose(deeplift, expected, rtol=1e-9, atol=1e-12)
    gap = (h(z) @ w2)[np.arange(4), t] - (h(z0) @ w2)[np.arange(4), t]
    np.testing.assert_allclose(np.sum(deeplift, 1), gap, rtol=1e-9)  # was off by up to 1.07
    a = h(z)
    out = a @ w2
    relevance_a = a * ((np.eye(3)[t] / out) @ w2.T)
    expected = x * ((relevance_a / z) @ w1.T)
    np.testing.assert_allclose(relevance, expected, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(np.sum(relevance, 1), 1.0, rtol=1e-9)  # was -0.14 ... 0.92


@pytest.mark.parametrize("act", [_tanh, _ste_relu, lambda z: jnp.logaddexp(z, 0.0)],
                         ids=["custom_jvp_tanh", "straight_through_relu", "logaddexp"])
@jax.enable_x64(True)
def test_gradients_through_a_custom_activation_stay_its_own(act):
    w1, w2, x, t = _setup()
    f = lambda v: act(v @ w1) @ w2  # noqa: E731
    expected = jax.grad(lambda v: f(v)[jnp.arange(4), t].sum())(x)
    np.testing.assert_allclose(attribution.gradient(f, x, t), expected, rtol=1e-12)

    class NoOp:  # an activation method that keeps the plain gradient
        def __hash__(self):
            return 0

        def __eq__(self, other):
            return type(other) is NoOp

        def activation(self, op, x, y, g):
            return None

    rewritten = jax.grad(lambda v: jp.rewrite_backward(f, NoOp())(v)[jnp.arange(4), t].sum())(x)
    np.testing.assert_allclose(rewritten, expected, rtol=1e-12)


@pytest.mark.parametrize("act", [
    _softplus_by_hand, lambda z: jax.scipy.special.xlogy(z, jnp.exp(z))],
    ids=["custom_jvp_log1p_exp", "xlogy"])
def test_an_unrecognised_nonlinearity_under_a_custom_derivative_warns(act):
    w1, w2, x, t = _setup()
    f = lambda v: act(v @ w1) @ w2  # noqa: E731
    for call in (lambda: attribution.lrp(f, x, t, rules=lrp.Epsilon()),
                 lambda: attribution.deeplift(f, x, t)):
        _, messages = _caught(call)
        assert any("custom derivative (jax.custom_jvp)" in m and "activation methods" in m
                   for m in messages), messages


def test_a_jit_named_like_an_activation_is_one_only_when_its_body_is():
    w1, w2, x, t = _setup()

    @jax.jit
    def gelu(h, w):  # a dense layer and its GELU
        return jax.nn.gelu(h @ w)

    named = lambda v: gelu(v, w1) @ w2  # noqa: E731
    plain = lambda v: jax.nn.gelu(v @ w1) @ w2  # noqa: E731
    assert [(s.name, s.kind) for s in jp.sites(named, x)] == [
        (s.name, s.kind) for s in jp.sites(plain, x)]
    assert [s.kind for s in jp.sites(named, x)] == ["linear", "activation", "linear"]
    np.testing.assert_allclose(attribution.lrp(named, x, t, rules=lrp.Epsilon()),
                               attribution.lrp(plain, x, t, rules=lrp.Epsilon()), rtol=1e-5)
    np.testing.assert_allclose(attribution.deeplift(named, x, t),
                               attribution.deeplift(plain, x, t), rtol=1e-5)

    @jax.jit
    def relu(z):  # a leaky ReLU
        return jnp.where(z > 0, z, 0.2 * z)

    guided, _ = _caught(lambda: attribution.guided_backprop(lambda v: relu(v @ w1) @ w2, x, t))
    slope = np.where(x @ w1 > 0, 1.0, 0.2)  # guided backprop acts at ReLUs only: the gradient
    np.testing.assert_allclose(guided, (slope * w2[:, t].T) @ w1.T, rtol=1e-5)


@pytest.mark.parametrize("name, fn", [("relu", jax.nn.relu), ("silu", jax.nn.silu),
                                      ("leaky_relu", lambda z: jax.nn.leaky_relu(z, 0.3))])
def test_a_jit_of_the_activation_it_is_named_after_stays_that_activation(name, fn):
    w1, w2, x, _ = _setup()

    def helper(z):
        return fn(z)

    helper.__name__ = name  # the jit's name in the trace
    f = lambda v: jax.jit(helper)(v @ w1) @ w2  # noqa: E731
    assert [(s.kind, s.op) for s in jp.sites(f, x)] == [
        ("linear", "dense"), ("activation", name), ("linear", "dense")]


def test_a_switch_on_a_literal_index_is_its_branch_written_out():
    with jax.enable_x64(True):
        w1, w2, x, t = _setup()
        layer = lambda h: jax.nn.relu(h @ w1)  # noqa: E731
        zeros = lambda h: jnp.zeros((h.shape[0], 8))  # noqa: E731
        switched = lambda v: jax.lax.switch(1, [zeros, layer], v) @ w2  # noqa: E731
        relevance, messages = _caught(lambda: attribution.lrp(switched, x, t, rules=_LRP0))
        relevance = np.asarray(relevance)
        assert messages == []
        np.testing.assert_allclose(np.sum(relevance, 1), 1.0, rtol=1e-9)  # was -0.52 ... 3.19
        assert [s.name for s in jp.sites(switched, x)] == [
            s.name for s in jp.sites(lambda v: layer(v) @ w2, x)]
        clamped = lambda v: jax.lax.switch(5, [zeros, layer], v) @ w2  # noqa: E731
        np.testing.assert_allclose(np.asarray(attribution.lrp(clamped, x, t, rules=_LRP0)),
                                   relevance)
