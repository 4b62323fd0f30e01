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
    g_plain_rules = jax.grad(lambda x: jnp.sum(jp.rewrite_backward(f, object())(x) ** 2))(x)
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
