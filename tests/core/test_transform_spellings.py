"""Models that spell a layer with JAX transforms and tricks get the sites and rule places of the
plain spelling: a bias added under ``vmap``'s reshape or after a float cast belongs to its
layer, a straight-through estimator's ``stop_gradient`` branch is no rule operand, and a ReLU
written with ``jnp.where`` or a ``jax.custom_vjp`` is a relu site."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import lrp
from jaxplain.attribution import deeplift, guided_backprop
from jaxplain.attribution import lrp as lrp_attribution
from jaxplain.pathways import pathway_gradient

K = jax.random.split(jax.random.key(0), 6)
W1 = jax.random.normal(K[0], (10, 16))
B1 = jax.random.normal(K[1], (16,)) * 0.3
W2 = jax.random.normal(K[2], (16, 16)) * 0.4
W3 = jax.random.normal(K[3], (16, 4)) * 0.4
X = jax.random.uniform(K[4], (4, 10)) - 0.5
T = jnp.array([0, 1, 2, 3])


def _mlp(act):
    return lambda x: act(jax.nn.relu(x @ W1 + B1) @ W2) @ W3


def test_vmapped_layer_site_holds_its_bias():
    """``conv(x[None], w, b)[0]`` under vmap adds the bias to the (n, 1, h, w, c) value."""
    w = jax.random.normal(K[0], (3, 3, 1, 4))
    b = jnp.arange(4.0) + 1.0

    def conv(x):
        dims = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dims) + b

    f = jax.vmap(lambda xi: conv(xi[None])[0])
    x = jax.random.uniform(K[5], (2, 6, 6, 1))
    (site,) = jp.sites(f, x)
    assert (site.name, site.kind) == ("conv", "linear")
    np.testing.assert_allclose(jp.capture(f, "conv")(x)[1]["conv"], conv(x), atol=1e-6)


def test_vmapped_layer_bias_folds_into_the_layer_for_lrp():
    """The bias inside vmap's size-1 reshape is the layer's: LRP equals the batched spelling's
    (Epsilon(1e-9) differed by 1.70 at a scale of 0.057 in a trial)."""
    w = jax.random.normal(K[0], (3, 3, 1, 4))
    b = jnp.arange(4.0) - 1.5
    head = jax.random.normal(K[1], (4, 3))

    def conv(x):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC")) + b

    def net(x):
        return jax.nn.relu(conv(x)).mean((1, 2)) @ head

    # as a Flax Conv on an unbatched input: a batch of one around the layer, bias included
    per_example = jax.vmap(lambda xi: jax.nn.relu(conv(xi[None])[0]).mean((0, 1)) @ head)
    x = jax.random.uniform(K[5], (2, 6, 6, 1))
    for rules in (lrp.Epsilon(1e-9), lrp.EpsilonPlusFlat()):
        np.testing.assert_allclose(lrp_attribution(per_example, x, 0, rules=rules),
                                   lrp_attribution(net, x, 0, rules=rules), rtol=1e-5, atol=1e-7)


def test_cast_between_matmul_and_bias_keeps_the_bias_in_the_layer():
    """``(h.astype(bf16) @ w).astype(f32) + b``: the site and LRP-eps are the float32 twin's
    (the bias was a free pass-through: sums 1.00 where the twin's are 4.2, 1.7, 1.3, 1.5)."""
    w1 = jnp.round(W1 * 4) / 4  # bfloat16 values; with integer-like inputs every sum is exact
    x = jnp.round(X * 8) / 8

    def twin(x):
        return jax.nn.relu(x @ w1 + B1) @ W3

    def mixed(x):
        z = (x.astype(jnp.bfloat16) @ w1.astype(jnp.bfloat16)).astype(jnp.float32) + B1
        return jax.nn.relu(z) @ W3

    np.testing.assert_allclose(mixed(x), twin(x), atol=1e-5)
    site = jp.capture(mixed, "linear")(x)[1]["linear"]
    assert site.dtype == jnp.float32
    np.testing.assert_allclose(site, x @ w1 + B1, atol=1e-5)
    rules = lrp.Epsilon(1e-9)
    np.testing.assert_allclose(lrp_attribution(mixed, x, T, rules=rules),
                               lrp_attribution(twin, x, T, rules=rules), atol=2e-2, rtol=2e-2)


@jax.custom_vjp
def _ste_vjp(h):
    return jnp.round(h * 4) / 4


_ste_vjp.defvjp(lambda h: (jnp.round(h * 4) / 4, None), lambda _, g: (g,))


def _ste_stop_gradient(h):
    return h + jax.lax.stop_gradient(jnp.round(h * 4) / 4 - h)


def test_stop_gradient_branch_is_no_rule_operand():
    """A straight-through estimator through ``stop_gradient``: LRP-eps of a bias-free net is
    conserved (sums to 1, as the custom_vjp spelling's; was 0.90-1.04); its add stays a site."""
    def net(q):
        return lambda x: q(jax.nn.relu(x @ W1)) @ W3

    stopped, custom = net(_ste_stop_gradient), net(_ste_vjp)
    relevance = lrp_attribution(stopped, X, T, rules=lrp.Epsilon(1e-9))
    np.testing.assert_allclose(relevance.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(relevance, lrp_attribution(custom, X, T, rules=lrp.Epsilon(1e-9)),
                               atol=1e-6)
    added = jp.capture(stopped, "add")(X)[1]["add"]
    np.testing.assert_allclose(added, _ste_vjp(jax.nn.relu(X @ W1)), atol=1e-6)


_WHERE_RELUS = {
    "gt": lambda z: jnp.where(z > 0, z, 0.0),
    "ge zeros_like": lambda z: jnp.where(z >= 0, z, jnp.zeros_like(z)),
    "le flipped": lambda z: jnp.where(z <= 0, 0.0, z),
}


@pytest.mark.parametrize("spelling", sorted(_WHERE_RELUS))
def test_where_relu_is_a_relu_site(spelling):
    plain, written = _mlp(jax.nn.relu), _mlp(_WHERE_RELUS[spelling])
    assert [(s.name, s.op) for s in jp.sites(written, X)] == [
        (s.name, s.op) for s in jp.sites(plain, X)]
    np.testing.assert_allclose(guided_backprop(written, X, T), guided_backprop(plain, X, T),
                               atol=1e-6)
    np.testing.assert_allclose(pathway_gradient(written, X, T, keep=0.3),
                               pathway_gradient(plain, X, T, keep=0.3), atol=1e-6)


def test_where_leaky_relu_is_a_leaky_relu_site_also_under_vmap():
    plain = _mlp(lambda z: jax.nn.leaky_relu(z, 0.1))
    written = jax.vmap(_mlp(lambda z: jnp.where(z > 0, z, 0.1 * z)))
    assert [(s.name, s.op) for s in jp.sites(written, X)] == [
        (s.name, s.op) for s in jp.sites(plain, X)]
    np.testing.assert_allclose(pathway_gradient(written, X, T, keep=0.3),
                               pathway_gradient(plain, X, T, keep=0.3), atol=1e-6)


def test_where_relu_whose_mask_is_used_again_keeps_its_value():
    """The comparison stays where something else reads it; values and gradients are as f's."""
    def f(x):
        z = x @ W1
        mask = z > 0
        return jnp.where(mask, z, 0.0) @ W3 + mask.astype(jnp.float32) @ W3

    y, found = jp.capture(f, "relu")(X)
    np.testing.assert_allclose(y, f(X), atol=1e-6)
    np.testing.assert_allclose(found["relu"], jax.nn.relu(X @ W1), atol=1e-6)


@jax.custom_vjp
def _relu_vjp(z):
    return jnp.maximum(z, 0)


_relu_vjp.defvjp(lambda z: (jnp.maximum(z, 0), z), lambda z, g: (g * (z > 0),))


@jax.custom_vjp
def _where_relu_vjp(z):
    return jnp.where(z > 0, z, 0.0)


_where_relu_vjp.defvjp(lambda z: (_where_relu_vjp(z), z), lambda z, g: (g * (z > 0),))


@pytest.mark.parametrize("act", [_relu_vjp, _where_relu_vjp], ids=["max", "where"])
def test_custom_vjp_relu_is_a_relu_site(act):
    """DeepLIFT sums to the output difference (the gap was 0.88, -0.10, -0.52, -0.69)."""
    plain, custom = _mlp(jax.nn.relu), _mlp(act)
    assert [(s.name, s.op) for s in jp.sites(custom, X)] == [
        (s.name, s.op) for s in jp.sites(plain, X)]
    baseline = jnp.full_like(X, 0.5)
    attribution = deeplift(custom, X, T, baseline=baseline)
    delta = (custom(X) - custom(baseline))[jnp.arange(4), T]
    np.testing.assert_allclose(attribution.sum(1), delta, atol=1e-4)
    np.testing.assert_allclose(attribution, deeplift(plain, X, T, baseline=baseline), atol=1e-5)
