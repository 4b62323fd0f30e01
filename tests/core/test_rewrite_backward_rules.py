"""rewrite_backward's rules: which pair applies at a place, what is refused and how, where the
input layer is, and which rule methods a loop left whole reports."""

import dataclasses
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution as A
from jaxplain import lrp as L
from jaxplain.core import _program

_KEYS = jax.random.split(jax.random.key(0), 4)
_W1, _W2, _W3 = (jax.random.normal(k, s) for k, s in zip(_KEYS, [(4, 6), (6, 6), (6, 3)]))
_X = jax.random.normal(_KEYS[3], (3, 4))


def _residual(x):
    """Bias-free dense, ReLU, a residual block (its dense is the place 'block'), dense."""
    h = jax.nn.relu(x @ _W1)
    with jax.named_scope("block"):
        h = jax.nn.relu(h @ _W2) + h
    return h @ _W3


def _stab(z):
    return z + jnp.where(z >= 0, 1e-9, -1e-9)


@dataclasses.dataclass(frozen=True)
class LRP0:
    """LRP-0 at linear layers and residual adds (no activation method)."""

    def linear(self, layer, x, g):
        return x * jax.vjp(lambda v: layer.apply(v, layer.weight), x)[1](g / _stab(layer(x)))[0]

    def add(self, a, b, y, g):
        return a * g / _stab(y), b * g / _stab(y)


@dataclasses.dataclass(frozen=True)
class PassAct:
    """An activation rule only."""

    def activation(self, op, x, y, g):
        return g


@dataclasses.dataclass(frozen=True)
class Guided:
    def activation(self, op, x, y, g):
        return g * (x > 0) * (g > 0)


def _grad(f):
    return jax.grad(lambda v: f(v).sum())(_X)


def _relevance(rules, f=_residual, x=_X):
    y, pullback = jax.vjp(jp.rewrite_backward(f, rules), x)
    return pullback(jax.nn.one_hot(y.argmax(-1), y.shape[-1]))[0]


def test_a_pair_whose_rule_lacks_the_method_is_passed_over():
    # block's dense and add match PassAct first: they got the plain gradient (sums -1.7 to 4.6)
    shadowed = _relevance([(("block", "block/*"), PassAct()), ("*", LRP0())])
    np.testing.assert_allclose(shadowed.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(shadowed, _relevance(LRP0()), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(_relevance([("*", LRP0()), ("block/*", PassAct())]),
                               _relevance(LRP0()), rtol=1e-5, atol=1e-7)


@dataclasses.dataclass(frozen=True)
class Typo:
    def activations(self, op, x, y, g):
        return g


@dataclasses.dataclass
class Unfrozen:
    def activation(self, op, x, y, g):
        return g


@pytest.mark.parametrize("rules, error, match", [
    ({"block/*": Guided()}, TypeError, r"got a dict: pass a list of \(selector, rule\) pairs"),
    ("relu", TypeError, "rules is the string 'relu'; a rule is an object with"),
    (Guided, TypeError, r"rules is the class Guided; pass an instance, Guided\(\)"),
    ([("relu", Guided)], TypeError, r"the rule for 'relu' is the class Guided"),
    (Typo(), TypeError, r"none of the rule methods linear, .*; rename 'activations' to "
                        r"'activation'"),
    (object(), TypeError, r"\(object\) has none of the rule methods"),
    (Unfrozen(), TypeError, r"not hashable.*frozen dataclass"),
    (["relu"], TypeError, "got the entry 'relu'"),
])
def test_rules_that_would_be_ignored_are_refused_when_made(rules, error, match):
    with pytest.raises(error, match=match):
        jp.rewrite_backward(_residual, rules)


def test_a_name_or_glob_that_picks_no_place_is_refused_with_close_matches():
    for selector in ["blok/*", "nothing", ("relu", "blok/relu")]:
        with pytest.raises(ValueError, match=r"Unknown place \(in rules\) '(blok/\*|nothing|"
                                             r"blok/relu)'.*Known sites: linear, relu"):
            jp.rewrite_backward(_residual, [(selector, Guided())])(_X)
    with pytest.raises(ValueError, match="Did you mean 'block/relu'"):
        jp.rewrite_backward(_residual, [("blok/relu", Guided())])(_X)
    plain = _grad(_residual)
    assert not np.allclose(_grad(jp.rewrite_backward(_residual, [("block/*", Guided())])), plain)
    never = lambda name, site: False  # noqa: E731 - a predicate may pick nothing
    np.testing.assert_allclose(_grad(jp.rewrite_backward(_residual, [(never, Guided())])), plain,
                               rtol=1e-6)


@dataclasses.dataclass(frozen=True)
class Narrow:
    def activation(self, op, x, y, g):
        return g[:, :1]


@dataclasses.dataclass(frozen=True)
class Failing:
    def linear(self, layer, x, g):
        return x @ layer.weight  # the output's shape, not the input's

    def add(self, a, b, y, g):
        return g


@dataclasses.dataclass(frozen=True)
class Crashing:
    def linear(self, layer, x, g):
        return layer.apply(x.T, layer.weight)


def test_a_rule_that_fails_or_answers_in_another_shape_is_named_with_its_place():
    def grad(rules):
        return _grad(jp.rewrite_backward(_residual, rules))

    with pytest.raises(ValueError, match=r"Narrow.activation at the place 'block/relu' returned "
                                         r"a cotangent of shape \(3, 1\) for an input of shape "
                                         r"\(3, 6\)"):
        grad([("block/relu", Narrow())])
    with pytest.raises(ValueError, match=r"Failing.linear at the place 'linear_1' returned a "
                                         r"cotangent of shape \(3, 3\)"):
        grad([("linear_1", Failing())])
    with pytest.raises(TypeError, match=r"Crashing.linear at the place 'linear' failed: "
                                        r"TypeError: dot_general"):
        grad([("linear", Crashing())])
    with pytest.raises(TypeError, match=r"Failing.add at the place 'block/add' returned "
                                        r"an array of shape \(3, 6\); it returns a pair"):
        grad([("block/add", Failing())])


class Layout(nn.Module):
    """A layout op on the input, then a convolution, ReLU, global mean and dense head."""

    mode: str

    @nn.compact
    def __call__(self, x):
        if self.mode == "repeat":
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        elif self.mode == "pad":
            x = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
        elif self.mode == "concat":  # a constant channel, as CoordConv's
            x = jnp.concatenate([x, jnp.ones_like(x)], -1)
        elif self.mode == "flip":
            x = jnp.flip(jnp.transpose(x, (0, 2, 1, 3)), 1)
        x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
        return nn.Dense(3, name="head")(x.mean(axis=(1, 2)))


@pytest.mark.parametrize("mode", ["repeat", "pad", "concat", "flip"])
def test_a_conv_that_reads_the_input_through_layout_ops_is_the_input_layer(mode):
    x = jax.random.uniform(jax.random.key(0), (2, 6, 6, 1))
    model = Layout(mode)
    f = jp.as_function(model, model.init(jax.random.key(1), x))
    named = A.lrp(f, x, 0, rules=L.Composite(layers=(("conv", L.Flat()),), default=L.Epsilon()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no linear layer reads the input"
        first = A.lrp(f, x, 0, rules=L.Composite(first=L.Flat(), default=L.Epsilon()))
        box = A.lrp(f, x, 0, rules=L.EpsilonGammaBox(0.0, 1.0))
    np.testing.assert_allclose(first, named, rtol=1e-5, atol=1e-7)  # was the default's
    assert not np.allclose(first, A.lrp(f, x, 0, rules=L.Epsilon()), atol=1e-4)
    explicit = L.Composite(layers=(("conv", L.ZBox(0.0, 1.0)),), conv=L.Gamma(0.25),
                           dense=L.Epsilon(1e-6))
    np.testing.assert_allclose(box, A.lrp(f, x, 0, rules=explicit), rtol=1e-5, atol=1e-7)


@dataclasses.dataclass(frozen=True)
class Norm:
    """A sum rule only."""

    def sum(self, op, x, y, g, pullback):
        return x * pullback(g / _stab(y))


def test_a_loop_left_whole_names_the_sum_method_and_its_scope_is_a_place(monkeypatch):
    monkeypatch.setattr(_program, "UNROLL_BUDGET", 10)
    w = jax.random.normal(jax.random.key(2), (3, 5))

    def f(x):  # (batch, 8, 3)
        def step(h, x_t):
            with jax.named_scope("cell"):
                z = x_t @ w
                return h + z.sum(-1, keepdims=True) * z, None
        h, _ = jax.lax.scan(step, jnp.zeros((x.shape[0], 5)), jnp.swapaxes(x, 0, 1))
        return h

    x = jax.random.normal(jax.random.key(3), (2, 8, 3))
    for rules in [Norm(), [("cell", Norm())]]:
        with pytest.warns(UserWarning, match=r"loop 'cell'.*the rules' sum methods are not "
                                             r"applied"):
            jp.rewrite_backward(f, rules)(x)
