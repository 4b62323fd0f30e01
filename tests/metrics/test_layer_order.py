"""randomization_check orders its default layers where the model first uses their weights,
input to output: a bare parameter (a positional embedding, an input offset) beside the layer
whose output it meets, a layer called in a loop at its first step, a weight-tied layer at its
first use, and a layer the model never uses last, with a warning. Each state then equals the
method on the model with exactly the layers after it re-drawn (Adebayo et al.'s cascade)."""

from __future__ import annotations

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxplain import as_function, metrics
from jaxplain.metrics import _weights as W
from tests.core.models import Compiles

XT = jax.random.normal(jax.random.key(2), (3, 6, 4))  # (batch, tokens, features)
XV = jax.random.normal(jax.random.key(3), (3, 4))      # (batch, features)


def _grad(f, x, t):
    return jax.grad(lambda x: f(x)[jnp.arange(len(x)), t].sum())(x)


def _state(r, name):
    return np.asarray(r.spearman[r.states.index(name)])


def _hand(f0, f, x):
    """Spearman, per example, of the gradient of `f` (a model with layers re-drawn by hand)
    against the original `f0`'s, for target 0."""
    t = jnp.zeros(len(x), jnp.int32)
    n = len(x)
    return np.asarray(metrics.spearman(_grad(f0, x, t).reshape(n, -1),
                                       _grad(f, x, t).reshape(n, -1)))


class _NnxViT(nnx.Module):
    def __init__(self, seed):
        rngs = nnx.Rngs(seed)
        self.embed = nnx.Linear(4, 5, rngs=rngs)
        self.pos = nnx.Param(jax.random.normal(rngs.params(), (6, 5)))
        self.mix = nnx.Linear(5, 5, rngs=rngs)
        self.head = nnx.Linear(5, 3, rngs=rngs)

    def __call__(self, x):
        h = self.embed(x) + self.pos[...]  # the positional embedding meets the input here
        h = jax.nn.relu(self.mix(h))
        return self.head(h.mean(1))


def test_an_nnx_positional_param_is_ordered_beside_the_embedding():
    model, fresh = _NnxViT(0), _NnxViT(1)
    r = metrics.randomization_check(model, None, XT, _grad, key=jax.random.key(0), fresh=fresh,
                                    target=0)
    assert r.states == ("head", "mix", "pos", "embed")  # output first: embed, pos, mix, head

    def redrawn(*names):
        m = _NnxViT(0)
        for name in names:
            setattr(m, name, getattr(fresh, name))
        return as_function(m)

    f0 = as_function(model)
    np.testing.assert_allclose(_state(r, "head"), _hand(f0, redrawn("head"), XT), atol=1e-5)
    np.testing.assert_allclose(_state(r, "mix"), _hand(f0, redrawn("head", "mix"), XT),
                               atol=1e-5)


class _LinenViT(nn.Module):
    @nn.compact
    def __call__(self, x):
        pos = self.param("pos", nn.initializers.normal(1.0), (6, 5))
        h = nn.Dense(5, name="embed")(x) + pos
        h = nn.relu(nn.Dense(5, name="mix")(h))
        return nn.Dense(3, name="head")(h.mean(1))


def test_a_linen_self_param_is_ordered_beside_the_embedding():
    model = _LinenViT()
    v0, v1 = model.init(jax.random.key(0), XT), model.init(jax.random.key(1), XT)
    r = metrics.randomization_check(model, v0, XT, _grad, key=jax.random.key(0), fresh=v1,
                                    target=0)
    assert r.states == ("head", "mix", "pos", "embed")
    head_only = {"params": {**v0["params"], "head": v1["params"]["head"]}}
    np.testing.assert_allclose(_state(r, "head"),
                               _hand(as_function(model, v0), as_function(model, head_only), XT),
                               atol=1e-5)


class _EqxOffset(eqx.Module):
    head: eqx.nn.Linear  # declared output first: the order must come from the calls
    embed: eqx.nn.Linear
    offset: jax.Array

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.head = eqx.nn.Linear(5, 3, key=k1)
        self.embed = eqx.nn.Linear(4, 5, key=k2)
        self.offset = jax.random.normal(k3, (4,))

    def __call__(self, x):  # one example, (4,)
        return self.head(jnp.tanh(self.embed(x + self.offset)))


def test_an_equinox_array_field_used_at_the_input_is_ordered_first():
    model, fresh = _EqxOffset(jax.random.key(0)), _EqxOffset(jax.random.key(1))
    r = metrics.randomization_check(model, None, XV, _grad, key=jax.random.key(0), fresh=fresh,
                                    target=0)
    assert r.states == ("head", "embed", "offset")
    head_only = eqx.tree_at(lambda m: m.head, model, fresh.head)
    np.testing.assert_allclose(_state(r, "head"),
                               _hand(as_function(model), as_function(head_only), XV), atol=1e-5)


def _order(model, variables=None, **apply_kwargs):
    weights = W.model_weights(model, variables, apply_kwargs)
    return W.layer_order(weights, XV, W.layer_leaves(weights, None))


class _EqxLoops(eqx.Module):
    """Bare arrays, declared in no useful order, used in a scan (stacked weights), a while
    loop and a branch on the data; called on the batch (a ``cond``, not a ``select``)."""

    head: jax.Array
    b: jax.Array
    a: jax.Array
    cell: jax.Array
    blocks: jax.Array
    embed: jax.Array

    def __init__(self, key):
        ks = jax.random.split(key, 6)
        self.head, self.b, self.a, self.cell, self.blocks, self.embed = (
            jax.random.normal(ks[0], (5, 3)), jax.random.normal(ks[1], (5, 5)),
            jax.random.normal(ks[2], (5, 5)), jax.random.normal(ks[3], (5, 5)),
            jax.random.normal(ks[4], (3, 5, 5)), jax.random.normal(ks[5], (4, 5)))

    def __call__(self, x):
        h = x @ self.embed
        h, _ = jax.lax.scan(lambda h, w: (jnp.tanh(h @ w), None), h, self.blocks)
        _, h = jax.lax.while_loop(lambda c: c[0] < 2,
                                  lambda c: (c[0] + 1, jnp.tanh(c[1] @ self.cell)), (0, h))
        h = jax.lax.cond(h.sum() > 0, lambda h: h @ self.a, lambda h: h @ self.b, h)
        return h @ self.head


def test_layers_in_loops_and_branches_are_ordered_by_first_use():
    order = _order(_EqxLoops(jax.random.key(0)), per_example=False)
    assert order[:3] == ("embed", "blocks", "cell") and order[-1] == "head"
    assert set(order[3:5]) == {"a", "b"}  # the two branches of one cond


class _LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, h, _):
        return jnp.tanh(nn.Dense(5)(h)), None


class _LinenScan(nn.Module):
    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (5,))
        h = nn.Dense(5, name="embed")(x)
        blocks = nn.scan(_LinenBlock, variable_axes={"params": 0},
                         split_rngs={"params": True}, length=3)
        h, _ = blocks(name="blocks")(h, None)  # stacked params: blocks/Dense_0/kernel (3, 5, 5)
        return nn.Dense(3, name="head")(h * scale)


def test_a_linen_scan_and_a_param_after_it_are_ordered_by_first_use():
    model = _LinenScan()
    assert _order(model, model.init(jax.random.key(0), XV)) == ("embed", "blocks", "scale",
                                                                 "head")


class _EqxTied(eqx.Module):
    mix: eqx.nn.Linear
    proj: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.mix = eqx.nn.Linear(4, 4, key=k1)
        self.proj = eqx.nn.Linear(4, 3, key=k2)

    def __call__(self, x):
        h = jnp.tanh(self.mix(self.proj.weight.T @ self.proj.weight @ x))  # tied: used first
        return self.proj(h)


def test_a_weight_tied_layer_is_ordered_at_its_first_use():
    assert _order(_EqxTied(jax.random.key(0))) == ("proj", "mix")


class _NnxSpare(nnx.Module):
    def __init__(self, seed):
        rngs = nnx.Rngs(seed)
        self.spare = nnx.Linear(4, 4, rngs=rngs)  # never called
        self.head = nnx.Linear(5, 3, rngs=rngs)
        self.embed = nnx.Linear(4, 5, rngs=rngs)

    def __call__(self, x):
        return self.head(jax.nn.relu(self.embed(x)))


def test_an_unused_layer_is_ordered_last_with_a_warning():
    with pytest.warns(UserWarning, match=r"never uses the weights of \('spare',\)"):
        r = metrics.randomization_check(_NnxSpare(0), None, XV, _grad, key=jax.random.key(0),
                                        fresh=_NnxSpare(1), target=0)
    assert r.states == ("spare", "head", "embed")
    np.testing.assert_allclose(r.spearman[0], 1.0, atol=1e-6)  # re-drawing it changes nothing


def test_the_order_is_read_from_one_trace_without_compiling():
    model = _NnxViT(0)
    weights = W.model_weights(model, None, {})
    layers = W.layer_leaves(weights, None)
    with Compiles() as compiles:
        order = W.layer_order(weights, XT, layers)
    assert order == ("embed", "pos", "mix", "head") and compiles.count == 0
