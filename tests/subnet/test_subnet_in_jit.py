"""extract and evaluate refuse clearly inside jit, vmap or grad (they read values back to the
host); apply and fidelity run inside jit and agree with their eager calls."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import subnet
from jaxplain.subnet._types import SubNetwork

W1 = jax.random.normal(jax.random.key(0), (6, 8))
W2 = jax.random.normal(jax.random.key(1), (8, 3))
X = jax.random.normal(jax.random.key(2), (6, 6))
KEY = jax.random.key(3)


def mlp(p, x):
    with jax.named_scope("hidden"):
        h = x @ p["w1"]
    return jax.nn.relu(h) @ p["w2"]


P = {"w1": W1, "w2": W2}


def f(x):
    return mlp(P, x)


def _sub():
    mask = jnp.arange(8) < 5
    return SubNetwork(masks={"hidden": mask}, scores={"hidden": jnp.where(mask, 1.5, 0.0)},
                      gates={"hidden": jnp.asarray(0.9)}, region_agreement=jnp.ones(()),
                      region_kl=jnp.zeros(()), l1=jnp.zeros(()), threshold=jnp.zeros(()),
                      sites=("hidden",))


def _extract(g, x, key=KEY):
    return subnet.extract(g, x, sites="hidden", key=key, steps=5, finetune_steps=5).masks


HOST_SIDE = "host-side.*outside jit, vmap or grad"


@pytest.mark.parametrize("case", ["jit x", "jit params", "jit nothing traced", "vmap params",
                                  "grad params", "jit key"])
def test_extract_under_a_trace_is_a_clear_type_error(case):
    calls = {
        "jit x": lambda: jax.jit(lambda x: _extract(f, x))(X),
        "jit params": lambda: jax.jit(lambda p: _extract(lambda x: mlp(p, x), X))(P),
        "jit nothing traced": lambda: jax.jit(lambda: _extract(f, X))(),
        "vmap params": lambda: jax.vmap(lambda w: _extract(lambda x: mlp({"w1": w, "w2": W2},
                                                                         x), X))(W1[None]),
        "grad params": lambda: jax.grad(lambda w: _extract(
            lambda x: mlp({"w1": w, "w2": W2}, x), X) and 0.0)(W1),
        "jit key": lambda: jax.jit(lambda k: _extract(f, X, k))(KEY),
    }
    with pytest.raises(TypeError, match=HOST_SIDE):
        calls[case]()


def test_evaluate_under_a_trace_is_a_clear_type_error_and_fidelity_runs():
    sub = _sub()
    with pytest.raises(TypeError, match=HOST_SIDE):
        jax.jit(lambda p: subnet.evaluate(lambda x: mlp(p, x), sub, X))(P)
    with pytest.raises(TypeError, match=HOST_SIDE):
        jax.vmap(lambda w: subnet.evaluate(lambda x: mlp({"w1": w, "w2": W2}, x), sub, X))(
            W1[None])
    with pytest.raises(TypeError, match=HOST_SIDE):
        jax.jit(lambda s: subnet.evaluate(f, s, X))(sub)
    eager = subnet.fidelity(f, sub, X)
    traced = jax.jit(lambda p: subnet.fidelity(lambda x: mlp(p, x), sub, X))(P)
    np.testing.assert_allclose(traced.agreement, eager.agreement)
    np.testing.assert_allclose(traced.kl, eager.kl, rtol=1e-5, atol=1e-7)
    assert subnet.evaluate(f, sub, X)["region_agreement"] == pytest.approx(
        float(eager.agreement))


def test_apply_runs_inside_jit_with_traced_weights():
    sub = _sub()
    eager = subnet.apply(f, sub)(X)
    traced = jax.jit(lambda p: subnet.apply(lambda x: mlp(p, x), sub)(X))(P)
    np.testing.assert_allclose(traced, eager, rtol=1e-5, atol=1e-6)
