"""Nodes that keep their own backward pass (custom derivatives, cond, loops left whole):
rewrite_backward warns when the rules have methods for places inside them, and refuses rules
selecting them with the reason; an eqx.filter_jit function is a plain function."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution, lrp

W1 = jax.random.normal(jax.random.key(0), (10, 16))
W2 = jax.random.normal(jax.random.key(1), (16, 4)) * 0.4
X = jax.random.uniform(jax.random.key(2), (4, 10))
T = jnp.arange(4)


def _dense_relu(h):
    return jax.nn.relu(h @ W1)


@jax.custom_vjp
def _fused(h):  # a fused dense + ReLU with its exact backward pass
    return _dense_relu(h)


_fused.defvjp(lambda h: jax.vjp(_dense_relu, h), lambda pullback, g: pullback(g))


@jax.custom_vjp
def _reverse(h):  # a gradient reversal: no place inside
    return h


_reverse.defvjp(lambda h: (h, None), lambda _, g: (-g,))


def _fused_net(x):
    with jax.named_scope("fc1"):
        h = _fused(x)
    return h @ W2


def _cond_net(x):  # a switch computed in the program (a literal predicate is inlined)
    h = jax.lax.cond(jnp.ones(()) > 0, _dense_relu, lambda h: jnp.tanh(h @ W1), x)
    return h @ W2


def test_a_cond_on_a_literal_is_its_branch_written_out():
    def switched(x):  # lax.cond(True, ...): a configuration switch
        return jax.lax.cond(True, _dense_relu, lambda h: jnp.tanh(h @ W1), x) @ W2

    sums, messages = _lrp_sums(switched)
    np.testing.assert_allclose(sums, 1.0, atol=1e-4)  # 0.09-0.40 when the cond stayed whole
    assert messages == []
    assert [s.name for s in jp.sites(switched, X)] == [
        s.name for s in jp.sites(lambda x: _dense_relu(x) @ W2, X)]


def test_a_layer_in_a_while_loop_is_reported():
    def f(x):
        def body(carry):
            with jax.named_scope("cell"):
                return carry[0] + 1, jnp.tanh(carry[1] @ W1 @ W1.T)
        return jax.lax.while_loop(lambda c: c[0] < 2, body, (0, x))[1]

    with pytest.warns(UserWarning, match="the while_loop 'cell' .* rules' linear methods "
                                         ".* fori_loop with static bounds"):
        jp.rewrite_backward(f, lrp.Epsilon())(X)


def _lrp_sums(f):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        relevance = attribution.lrp(f, X, T, rules=lrp.Epsilon(1e-9))
    return np.asarray(relevance.sum(1)), [str(w.message) for w in caught]


def test_a_custom_vjp_layer_is_reported_and_its_unfused_twin_conserves():
    sums, messages = _lrp_sums(_fused_net)
    assert not np.allclose(sums, 1.0, atol=1e-3)  # its backward pass is its own
    (message,) = messages
    assert "custom derivative (jax.custom_vjp) 'fc1'" in message
    assert "activation, linear methods are not applied" in message
    assert "without the custom derivative" in message
    sums, messages = _lrp_sums(lambda x: _dense_relu(x) @ W2)
    np.testing.assert_allclose(sums, 1.0, atol=1e-4)
    assert messages == []


def test_a_layer_under_a_cond_is_reported_with_the_python_if():
    sums, messages = _lrp_sums(_cond_net)
    assert not np.allclose(sums, 1.0, atol=1e-3)  # the plain gradient of the branch taken
    (message,) = messages
    assert "the lax.cond 'cond' (called at test_opaque_places.py:" in message
    assert "plain gradient of the branch taken" in message and "Python if" in message
    baseline = jnp.full_like(X, 0.5)
    with pytest.warns(UserWarning, match="the lax.cond .* rules' activation methods"):
        attribution.deeplift(_cond_net, X, T, baseline=baseline)


@jax.custom_jvp
def _relu(z):  # a custom_jvp ReLU is an activation place, not an opaque node
    return jnp.maximum(z, 0.0)


_relu.defjvp(lambda p, t: (_relu(p[0]), t[0] * (p[0] > 0)))


@pytest.mark.parametrize("act", [
    jax.nn.relu, jax.nn.gelu, jax.nn.softplus, jax.nn.silu, jax.nn.relu6, _relu, _reverse,
    lambda z: jnp.logaddexp(z, 0.0),  # a custom_jvp softplus
    jnp.sinc,  # its custom_jvp (at 0) is affine arithmetic (xlogy's log warns: see
    # tests/core/test_custom_activations.py)
])
def test_no_warning_where_no_layer_keeps_its_own_backward_pass(act):
    f = lambda x: act(x @ W1) @ W2  # noqa: E731
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attribution.lrp(f, X, T, rules=lrp.EpsilonPlusFlat())
        jax.grad(lambda x: jp.rewrite_backward(f, lrp.Epsilon())(x).sum())(X)
    unruled = "lrp: the model applies elementwise nonlinearities"  # sinc's sin: no rule
    assert [str(w.message) for w in caught
            if not (act is jnp.sinc and str(w.message).startswith(unruled))] == []


def test_no_warning_for_a_cond_of_constants_or_rules_without_the_method():
    def weights_by_cond(x):  # the cond picks a weight: it reads no value computed from x
        return jax.nn.relu(x @ jax.lax.cond(True, lambda: W1, lambda: -W1)) @ W2

    class PoolOnly:  # the cond holds no pool
        def __hash__(self):
            return 0

        def __eq__(self, other):
            return type(other) is PoolOnly

        def pool(self, op, x, y, g, pullback):
            return None

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attribution.lrp(weights_by_cond, X, T, rules=lrp.Epsilon())
        jax.grad(lambda x: jp.rewrite_backward(_cond_net, PoolOnly())(x).sum())(X)
    assert [str(w.message) for w in caught] == []


def test_rules_selecting_an_opaque_site_or_a_scope_say_why():
    assert "fc1" in [s.name for s in jp.sites(_fused_net, X)]
    for name in ("fc1", "fc1/relu"):
        with pytest.raises(ValueError, match=r"'fc1.*' in rules names the function with a custom "
                                             r"derivative \(jax.custom_vjp\).*opaque to rules"):
            jp.rewrite_backward(_fused_net, [(name, lrp.Epsilon())])(X)

    def scoped(x):  # "block" is a site, its layers "block/a" and "block/b" are places
        with jax.named_scope("block"):
            with jax.named_scope("a"):
                h = jax.nn.relu(x @ W1)
            with jax.named_scope("b"):
                h = jax.nn.relu(h @ (W1.T @ W1))
        return h @ W2

    with pytest.raises(ValueError, match=r"'block' in rules is a scope.*'block/\*'"):
        jp.rewrite_backward(scoped, [("block", lrp.Epsilon())])(X)
    with pytest.raises(ValueError, match="Unknown place"):
        jp.rewrite_backward(scoped, [("blok/linear", lrp.Epsilon())])(X)


def test_an_eqx_filter_jit_function_is_a_plain_function():
    import equinox as eqx

    def f(x):
        return jax.nn.relu(x @ W1) @ W2

    expected = attribution.gradient(jax.jit(f), X, T)
    np.testing.assert_allclose(attribution.gradient(eqx.filter_jit(f), X, T), expected, rtol=1e-6)
    assert [s.name for s in jp.sites(eqx.filter_jit(f), X)] == [s.name for s in jp.sites(f, X)]
    assert jp.as_function(eqx.filter_jit(f)) is not None
    with pytest.raises(ValueError, match="_JitWrapper: a function.*pass it without them"):
        jp.as_function(eqx.filter_jit(f), per_example=False)
