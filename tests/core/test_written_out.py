"""Activations JAX writes out as several equations (jax.nn.gelu) are one activation site."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain.core import _written_out


class GeluMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.gelu(nn.Dense(12)(x))                       # tanh approximation (the default)
        x = nn.gelu(nn.Dense(8)(x), approximate=False)     # erf form
        return nn.Dense(3)(x)


@pytest.fixture(scope="module")
def gelu_mlp():
    model, x = GeluMLP(), jax.random.normal(jax.random.key(0), (5, 6))
    return jp.as_function(model, model.init(jax.random.key(1), x)), x


def test_gelu_is_one_activation_site(gelu_mlp):
    f, x = gelu_mlp
    sites = [(s.name, s.kind) for s in jp.sites(f, x)]
    assert sites == [("Dense_0", "module"), ("gelu", "activation"), ("Dense_1", "module"),
                     ("gelu_1", "activation"), ("Dense_2", "module")]
    assert {s.op for s in jp.sites(f, x) if s.kind == "activation"} == {"gelu"}


def test_gelu_site_values_and_edits_are_exact(gelu_mlp):
    f, x = gelu_mlp
    y, acts = jp.capture(f, ["Dense_0", "gelu", "Dense_1", "gelu_1"])(x)
    np.testing.assert_array_equal(y, jax.jit(f)(x))
    np.testing.assert_allclose(acts["gelu"], jax.nn.gelu(acts["Dense_0"]), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(acts["gelu_1"], jax.nn.gelu(acts["Dense_1"], approximate=False),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(jp.intervene(f, {})(x), jax.jit(f)(x))
    silenced = jp.intervene(f, {"gelu_1": lambda v: v.at[..., 2].set(0.0)})
    _, edited = jp.capture(silenced, ["gelu_1"])(x)
    assert np.all(np.asarray(edited["gelu_1"])[..., 2] == 0.0)
    g = jax.grad(lambda x: jnp.sum(f(x) ** 2))(x)
    g_plain_rules = jax.grad(lambda x: jnp.sum(jp.rewrite_backward(f, [])(x) ** 2))(x)
    np.testing.assert_allclose(g_plain_rules, g, rtol=1e-5, atol=1e-7)


def test_a_spelled_out_activation_whose_inner_value_is_read_elsewhere_stays_apart():
    spec = jax.ShapeDtypeStruct((4, 3), jnp.float32)
    jaxpr = jax.make_jaxpr(jax.nn.gelu)(spec).jaxpr
    uses = _written_out.last_uses(jaxpr)
    found = _written_out.match(jaxpr.eqns, 0, uses)
    assert found is not None and found[0] == len(jaxpr.eqns) and found[2] is jaxpr.outvars[0]
    leaked = dict(uses)
    leaked[jaxpr.eqns[4].outvars[0]] = len(jaxpr.eqns)  # the tanh's value, read after the GELU
    assert _written_out.match(jaxpr.eqns, 0, leaked) is None
    assert _written_out.match(jaxpr.eqns, 1, uses) is None  # not from its start


@pytest.mark.parametrize("activation", [jax.nn.relu6, jax.nn.hard_silu, jax.nn.soft_sign])
def test_named_activations_are_sites(activation):
    w = jnp.ones((3, 4))
    sites = jp.sites(lambda x: activation(x @ w) @ w.T, jnp.ones((2, 3)))
    assert [(s.kind, s.op) for s in sites if s.kind == "activation"] == [
        ("activation", activation.__name__)]


class Attention(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(4, name="embed")(x)
        h = h + nn.MultiHeadDotProductAttention(num_heads=2, name="attn")(h)
        return nn.Dense(3, name="head")(h.mean(axis=1))


def test_attention_weights_are_a_softmax_site():
    model, x = Attention(), jax.random.normal(jax.random.key(2), (2, 5, 3))
    f = jp.as_function(model, model.init(jax.random.key(3), x))
    site = {s.name: s for s in jp.sites(f, x)}["attn/softmax"]
    assert (site.kind, site.op, site.shape) == ("activation", "softmax", (2, 2, 5, 5))  # b h q k
    y, acts = jp.capture(f, ["attn/query", "attn/key", "attn/softmax"])(x)
    np.testing.assert_array_equal(y, jax.jit(f)(x))
    weights = nn.dot_product_attention_weights(acts["attn/query"], acts["attn/key"])
    np.testing.assert_allclose(acts["attn/softmax"], weights, rtol=1e-6, atol=1e-7)
    # uniform attention: every query position gets the same mixture of the values
    uniform = jp.intervene(f, {"attn/softmax": lambda w: jnp.full_like(w, 1 / w.shape[-1])})
    _, edited = jp.capture(uniform, ["attn"])(x)
    np.testing.assert_allclose(edited["attn"], edited["attn"][:, :1].repeat(5, axis=1), rtol=1e-5)
    assert not np.allclose(uniform(x), y)


def test_lrp_takes_the_gradient_through_a_softmax():
    # relevance passes unchanged through elementwise activations only; a softmax mixes its
    # inputs, so it gets its gradient (as in Zennit), the same as a softmax spelled otherwise
    ws = jax.random.normal(jax.random.key(4), (4, 3, 3))

    def model(softmax):
        def f(x):  # (batch, tokens, 3)
            q, k, v = (x @ w for w in ws[:3])
            h = softmax(q @ jnp.swapaxes(k, 1, 2)) @ v
            return jax.nn.relu(h).mean(axis=1) @ ws[3]
        return f

    def spelled_out(a):
        e = jnp.exp(a - jax.lax.stop_gradient(a.max(axis=-1, keepdims=True)))
        return e / e.sum(axis=-1, keepdims=True)

    named, spelled = model(jax.nn.softmax), model(spelled_out)
    x = jax.random.normal(jax.random.key(5), (2, 4, 3))
    assert "softmax" in [s.name for s in jp.sites(named, x)]
    assert "softmax" not in [s.name for s in jp.sites(spelled, x)]
    rules = jp.lrp.Epsilon(1e-3)
    np.testing.assert_allclose(jp.attribution.lrp(named, x, 1, rules=rules),
                               jp.attribution.lrp(spelled, x, 1, rules=rules), rtol=1e-4, atol=1e-6)
