"""activations, binarize and mine run on the host: a traced input (the user's jit, vmap or
grad) is refused with a TypeError that says so, not JAX's conversion error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import rules
from tests.rules._planted import planted

W = jax.random.normal(jax.random.key(0), (6, 8))
X = jax.random.normal(jax.random.key(1), (32, 6))


def model(w):
    return lambda z: jax.nn.relu(z @ w) @ jnp.ones((8, 3))


def test_mine_refuses_traced_layers():
    with pytest.raises(TypeError, match="layer 'a' must be a concrete array.*jit, vmap or grad"):
        jax.jit(lambda a: rules.mine({"a": a > 0, "b": a > 0.5}))(X)


def test_rule_rows_refuses_traced_layers():
    d_a, d_b, _ = planted(0, n=200, rules=1)
    found = rules.mine({"a": d_a, "b": d_b}, k_tail=8, beam=4, k_head=2, batch_size=8,
                       max_head=1, max_rules=1)
    assert len(found) > 0
    rule = found.rules[0]
    concrete = rules.rule_rows(rule, {"a": d_a, "b": d_b})
    assert concrete.shape == (200,)
    with pytest.raises(TypeError, match="must be a concrete array"):
        jax.jit(lambda a, b: rules.rule_rows(rule, {"a": a, "b": b}))(d_a, d_b)


@pytest.mark.parametrize("transform", [jax.jit, lambda g: jax.vmap(g)],
                         ids=["jit", "vmap"])
def test_activations_refuses_a_model_closing_over_traced_parameters(transform):
    w = W if transform is jax.jit else jnp.stack([W, W])
    with pytest.raises(TypeError, match=r"traced values at sites \['relu'\].*closes over"):
        transform(lambda w: rules.activations(model(w), X, ["relu"])["relu"].items)(w)
    # with concrete parameters the same call runs
    items = rules.activations(model(W), X, ["relu"])["relu"].items
    np.testing.assert_array_equal(items, np.asarray(X @ W) > 0)
