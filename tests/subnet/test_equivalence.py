"""Exactness of the gated function (spec checks 1, 2 and 4), without optimisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import subnet
from jaxplain.subnet import _objective
from tests.subnet import _nets


def _subnetwork(sites, units, masks=None, scores=None, gates=None):
    masks = masks or {n: jnp.ones(units, bool) for n in sites}
    return subnet.SubNetwork(
        masks=masks, scores=scores or {n: jnp.ones(units) for n in sites},
        gates=gates or {n: jnp.ones(()) for n in sites}, region_agreement=jnp.ones(()),
        region_kl=jnp.zeros(()), l1=jnp.zeros(()), threshold=jnp.zeros(()), sites=tuple(sites))


def test_start_equivalence_and_zero_gradient():
    f, x, _ = _nets.planted(0.01)
    sub = _subnetwork(_nets.SITES, 24)
    np.testing.assert_array_equal(np.asarray(subnet.apply(f, sub)(x)), np.asarray(f(x)))
    logp = jax.nn.log_softmax(f(x))
    params = {"scores": {n: jnp.ones(24) for n in _nets.SITES},
              "theta": {n: jnp.asarray(jnp.inf) for n in _nets.SITES}}
    masks = {n: jnp.ones(24, bool) for n in _nets.SITES}
    (loss, (kl, agree)), grads = jax.value_and_grad(_objective.objective, has_aux=True)(
        params, f, x, logp, masks, 0.0, 0.0, gate_penalty="sigmoid", train_gates=True)
    assert float(kl) == 0.0 and float(agree) == 1.0
    for g in jax.tree.leaves(grads):
        np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-6)


def test_zero_score_removes_the_unit_exactly():
    f, x, params = _nets.planted(0.01)
    masks = {n: jnp.ones(24, bool) for n in _nets.SITES}
    masks["conv2"] = masks["conv2"].at[5].set(False)
    sub = _subnetwork(_nets.SITES, 24, masks=masks)
    noisy = dict(params)
    rng = np.random.default_rng(0)
    noisy["w2"] = params["w2"].copy()
    noisy["w2"][..., 5] = rng.normal(size=noisy["w2"][..., 5].shape) * 10
    noisy["b2"] = params["b2"].copy()
    noisy["b2"][5] = 7.0
    f_noisy = _nets.planted_net(noisy)
    assert not np.allclose(f(x), f_noisy(x))  # the perturbation matters for the full net
    np.testing.assert_array_equal(np.asarray(subnet.apply(f, sub)(x)),
                                  np.asarray(subnet.apply(f_noisy, sub)(x)))


def test_closed_branch_gate_makes_the_block_relu_of_its_shortcut():
    p = _nets.residual_params()
    f = _nets.residual_net(p)
    x, _ = _nets.region()
    sites = ("stem", "conv_a", "conv_b")
    gates = {n: jnp.ones(()) for n in sites}
    gates["conv_b"] = jnp.zeros(())
    sub = _subnetwork(sites, 8, gates=gates)
    h = jax.nn.relu(_nets.conv(x, p["w0"], 0.0))
    expected = jnp.mean(jax.nn.relu(h), axis=(1, 2)) @ p["head"]
    np.testing.assert_allclose(np.asarray(subnet.apply(f, sub)(x)), np.asarray(expected),
                               rtol=1e-6, atol=1e-6)


def test_apply_is_pure_and_jittable():
    f, x, _ = _nets.planted(0.01)
    scores = {n: jnp.linspace(0.0, 2.0, 24) for n in _nets.SITES}
    sub = _subnetwork(_nets.SITES, 24, scores=scores)
    g = subnet.apply(f, sub)
    np.testing.assert_allclose(np.asarray(jax.jit(g)(x)), np.asarray(g(x)), rtol=1e-5,
                               atol=1e-5)
    # The pytree passes through jit.
    out = jax.jit(lambda s: s)(sub)
    assert out.sites == sub.sites and out.kept_units == sub.kept_units


def test_apply_rejects_a_subnetwork_of_another_model():
    f, x, _ = _nets.planted(0.01)
    sub = _subnetwork(_nets.SITES, 16)
    with pytest.raises(ValueError, match="units"):
        subnet.apply(f, sub)(x)
    with pytest.raises(TypeError, match="SubNetwork"):
        subnet.apply(f, {"conv1": jnp.ones(24)})
