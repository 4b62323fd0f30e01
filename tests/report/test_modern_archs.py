"""The report's defaults on modern activations: one family of ReLU-like sites (ReLU, ReLU6,
leaky ReLU, hard tanh) for the rules, sub-network and pathway sections; a model without one
gets a note from the sub-network section, not a failure."""

import types

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jp
from jaxplain.rules._demo import not_applicable
from jaxplain.subnet._demo import demo_section, sites_and_pair

W1 = jax.random.normal(jax.random.key(0), (6, 8))
W2 = jax.random.normal(jax.random.key(1), (8, 8))
W3 = jax.random.normal(jax.random.key(2), (8, 3))


def _mlp(activation):
    def f(x):
        with jax.named_scope("fc1"):
            h = activation(x @ W1)
        with jax.named_scope("fc2"):
            h = activation(h @ W2)
        return h @ W3

    return f


def _ctx(f):
    x = np.asarray(jax.random.normal(jax.random.key(3), (40, 6)), np.float32)
    data = types.SimpleNamespace(x_test=x, y_test=np.repeat(np.arange(2), 20))
    return types.SimpleNamespace(model=f, f=f, data=data)


def test_relu6_leaky_and_hard_tanh_sites_are_the_defaults():
    x = jnp.ones((2, 6))
    for activation in (jax.nn.relu, jax.nn.relu6, jax.nn.leaky_relu, jax.nn.hard_tanh):
        f = _mlp(activation)
        assert len(jp.core.relu_sites(f, x)) == 2, activation
        assert not_applicable(f, x) is None  # the rules section mines them
        assert sites_and_pair(_ctx(f))[0] == jp.core.relu_sites(f, x)
    assert jp.core.relu_sites(_mlp(jax.nn.gelu), x) == ()


def test_the_subnet_section_is_a_note_on_a_model_without_relu_like_sites():
    f = _mlp(jax.nn.gelu)
    reason = sites_and_pair(_ctx(f))
    assert isinstance(reason, str) and "ReLU-like" in reason
    section = demo_section(_ctx(f))
    assert not section.failed and "does not apply" in section.text
    assert "sites=" in section.text  # says how to score other sites
