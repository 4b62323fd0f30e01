"""LRP's first layer behind an input normalisation, per-channel ZBox bounds in either layout,
and the rule and composite checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain.attribution import lrp
from jaxplain.lrp import (AlphaBeta, Composite, Epsilon, EpsilonGammaBox, EpsilonPlusFlat, Flat,
                          Gamma, ZBox, ZPlus)

_K = jax.random.split(jax.random.key(0), 4)
W1 = jax.random.normal(_K[0], (3, 3, 3, 4)) * 0.5   # HWIO
D = jax.random.normal(_K[1], (4, 3))
X = jax.random.uniform(_K[2], (2, 6, 6, 3))
STD = jnp.array([0.5, 0.25, 2.0])


def _conv(x, w, layout):
    kernel = "HWIO" if layout == "NHWC" else "OIHW"
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=(layout, kernel, layout))


def net(z):
    """NHWC: conv, ReLU, global mean, dense."""
    with jax.named_scope("conv1"):
        h = jax.nn.relu(_conv(z, W1, "NHWC"))
    return h.mean(axis=(1, 2)) @ D


def net_nchw(z):
    with jax.named_scope("conv1"):
        h = jax.nn.relu(_conv(z, W1.transpose(3, 2, 0, 1), "NCHW"))
    return h.mean(axis=(2, 3)) @ D


def scaled(x):
    """The same net behind a per-channel input scaling (``x / std``)."""
    return net(x / STD)


@pytest.mark.parametrize("rules, through", [
    (EpsilonPlusFlat(), 1.0),                                        # a preset: Pass
    (Composite(first=ZBox(-4.0, 4.0), dense=Epsilon()), 1 / STD),     # scales="gradient"
    (Composite(first=ZBox(-4.0, 4.0), dense=Epsilon(), scales="pass"), 1.0)])
def test_the_first_rule_reaches_the_layer_behind_an_input_normalisation(rules, through):
    # the first layer's relevance (that of the net at z = x / std) reaches the pixels unchanged
    # where the composite passes per-channel scales (Zennit's presets pass a BatchNorm), else
    # through the scaling's gradient, 1 / std, as Zennit passes a module without a rule
    np.testing.assert_allclose(lrp(scaled, X, 0, rules=rules),
                               lrp(net, X / STD, 0, rules=rules) * through, rtol=1e-4, atol=1e-6)
    plain = lrp(scaled, X, 0, rules=Composite(dense=Epsilon()))
    assert not np.allclose(lrp(scaled, X, 0, rules=rules), plain, atol=1e-4)


def test_per_channel_zbox_bounds_sit_on_the_channel_axis_in_both_layouts():
    rules = EpsilonGammaBox(low=(-0.5, 0.0, -1.0), high=(1.0, 1.5, 2.0))
    nhwc = lrp(net, X, 1, rules=rules)
    nchw = lrp(net_nchw, jnp.moveaxis(X, -1, 1), 1, rules=rules)
    np.testing.assert_allclose(nchw, jnp.moveaxis(nhwc, -1, 1), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="ZBox low of shape"):
        lrp(net, X, 1, rules=EpsilonGammaBox(low=(0.0, 0.0), high=(1.0, 1.0)))


@pytest.mark.parametrize("make,message", [
    (lambda: Epsilon(-1.0), "epsilon >= 0"),
    (lambda: Gamma(-2.0), "gamma >= 0"),
    (lambda: ZBox(1.0, 0.0), "low <= high"),
    (lambda: AlphaBeta(-1.0, 0.0), "alpha and beta"),
    (lambda: Composite(conv=Epsilon), "pass an instance, Epsilon()"),
    (lambda: Composite(layers=("conv1", ZPlus())), r"\(selector, rule\) pairs"),
    (lambda: Composite(layers=(("conv1", "zplus"),)), "must be an LRP rule"),
    (lambda: Composite(first=Flat(), first_ops=("convolution",)), "first_ops"),
])
def test_bad_rules_are_refused_when_made(make, message):
    with pytest.raises((TypeError, ValueError), match=message):
        make()


def test_a_rule_class_or_a_layer_name_that_matches_nothing_is_named():
    with pytest.raises(TypeError, match="pass an instance"):
        lrp(net, X, 0, rules=Epsilon)
    with pytest.raises(ValueError, match=r"'conv9'\. Did you mean 'conv1'"):
        lrp(net, X, 0, rules=Composite(layers=(("conv9", ZPlus()),), default=Epsilon()))
    # a site that is not a linear layer (the ReLU) is no layer for a rule either
    with pytest.raises(ValueError, match="Unknown linear layer"):
        lrp(net, X, 0, rules=[("relu", ZPlus())])
    np.testing.assert_allclose(lrp(net, X, 0, rules=[("conv*", ZPlus()), ("linear*", Epsilon())]),
                               lrp(net, X, 0, rules=Composite(conv=ZPlus(), dense=Epsilon())),
                               rtol=1e-5)


def test_rule_parameters_given_as_arrays_become_numbers_and_traced_ones_are_refused():
    # Concrete JAX or NumPy values (e.g. from jnp.linspace) are read as numbers: the rule is
    # hashable and equals the rule of Python numbers, so it reuses that compiled program.
    for eps in jnp.linspace(0.1, 0.2, 2):
        rule = Epsilon(eps)
        assert rule == Epsilon(float(eps)) and isinstance(rule.epsilon, float)
        np.testing.assert_array_equal(lrp(net, X, 1, rules=rule),
                                      lrp(net, X, 1, rules=Epsilon(float(eps))))
    box = ZBox(np.zeros(3, np.float32), jnp.ones(3))              # per-channel arrays
    assert box == ZBox((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(lrp(net, X, 1, rules=Composite(first=box, default=Epsilon())),
                                  lrp(net, X, 1, rules=Composite(first=ZBox(0.0, 1.0),
                                                                 default=Epsilon())))
    assert AlphaBeta(jnp.float32(2.0), np.float64(1.0)) == AlphaBeta(2.0, 1.0)
    for make in (Epsilon, Gamma, ZPlus, lambda e: Composite(default=Epsilon(), stabilizer=e)):
        with pytest.raises(TypeError, match=r"is traced .* pass a Python number"):
            jax.jit(lambda e: lrp(net, X, 1, rules=make(e)))(0.1)
        with pytest.raises(TypeError, match=r"is traced"):
            jax.vmap(lambda e: lrp(net, X, 1, rules=make(e)))(jnp.array([0.1, 0.2]))


def test_composite_predicates_take_the_name_or_the_kernels_name_and_layer_pair():
    by_name = Composite(layers=((lambda n: n == "conv1", ZPlus()),), default=Epsilon(0.1))
    by_pair = Composite(layers=((lambda n, layer: layer.op == "conv", ZPlus()),),
                        default=Epsilon(0.1))
    by_glob = Composite(layers=(("conv*", ZPlus()),), default=Epsilon(0.1))
    reference = lrp(net, X, 1, rules=by_glob)
    np.testing.assert_array_equal(lrp(net, X, 1, rules=by_name), reference)
    np.testing.assert_array_equal(lrp(net, X, 1, rules=by_pair), reference)
    assert not np.allclose(reference, lrp(net, X, 1, rules=Epsilon(0.1)))  # ZPlus did apply
