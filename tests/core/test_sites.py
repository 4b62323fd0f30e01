import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from tests.core import models


def names(f, x):
    return [s.name for s in jp.sites(f, x)]


def test_linen_site_names_and_kinds():
    model, variables = models.linen_cnn()
    f = jp.as_function(model, variables)
    sites = {s.name: s for s in jp.sites(f, jnp.ones((2, 6, 6, 1)))}
    assert list(sites) == ["conv1", "relu", "block1/conv_a", "block1/relu", "block1/conv_b",
                           "block1/add", "block1/relu_1", "block1", "avg_pool", "fc1", "relu_1", "head"]
    assert sites["block1/add"].kind == "add"
    assert sites["relu"].kind == "activation" and sites["relu"].op == "relu"
    assert sites["avg_pool"].shape == (2, 3, 3, 4) and sites["avg_pool"].op == "avg_pool"
    assert sites["head"].shape == (2, 3) and sites["head"].kind == "module"


def test_nnx_and_equinox_names_are_attribute_paths():
    nnx_f = jp.as_function(models.NNXMLP(jp_rngs()))
    assert names(nnx_f, jnp.ones((2, 4))) == ["lin1", "relu", "blocks/0", "relu_1", "blocks/1",
                                              "relu_2", "lin2"]
    eqx_f = jp.as_function(models.equinox_mlp())
    assert names(eqx_f, jnp.ones((2, 4))) == ["layers/0", "relu", "layers/1", "relu_1", "layers/2"]


def jp_rngs():
    from flax import nnx
    return nnx.Rngs(0)


def test_plain_function_scopes_and_fallback_names():
    f, _ = models.plain_function()
    assert names(f, jnp.ones((3, 4))) == ["proj", "relu", "out"]
    w = jnp.ones((4, 5))
    g = lambda x: jnp.tanh(jnp.maximum(x @ w, 0.0) @ w.T)  # noqa: E731
    sites = jp.sites(g, jnp.ones((3, 4)))
    assert [(s.name, s.kind, s.op) for s in sites] == [
        ("linear", "linear", "dense"), ("relu", "activation", "relu"),
        ("linear_1", "linear", "dense"), ("tanh", "activation", "tanh")]


def test_names_survive_nested_jit_and_transforms():
    model, variables = models.linen_cnn()
    f = jp.as_function(model, variables)
    x = jnp.ones((2, 6, 6, 1))
    assert names(jax.jit(f), x) == names(f, x)
    inner = jax.jit(lambda x: f(x) * 1.0)
    assert names(inner, x) == names(f, x)
    # a rewritten or intervened function keeps the names of the original
    assert names(jp.intervene(f, {"relu": lambda v: v}), x) == names(f, x)


def test_site_values_are_the_last_equation_of_the_scope():
    model, variables = models.linen_cnn()
    f = jp.as_function(model, variables)
    x = jax.random.normal(jax.random.key(3), (2, 6, 6, 1))
    _, acts = jp.capture(f, lambda name, site: site.kind == "module")(x)
    _, state = model.apply(variables, x, capture_intermediates=True)
    inter = state["intermediates"]
    for name in ["conv1", "block1/conv_a", "block1/conv_b", "block1", "fc1", "head"]:
        node = inter
        for part in name.split("/"):
            node = node[part]
        np.testing.assert_allclose(acts[name], node["__call__"][0], rtol=1e-5, atol=1e-6)


def test_relu_sites_lists_post_relu_activations():
    model, variables = models.linen_cnn()
    f = jp.as_function(model, variables)
    assert jp.core.relu_sites(f, jnp.ones((1, 6, 6, 1))) == (
        "relu", "block1/relu", "block1/relu_1", "relu_1")


def test_select_language():
    model, variables = models.linen_cnn()
    sites = jp.sites(jp.as_function(model, variables), jnp.ones((1, 6, 6, 1)))
    assert jp.core.select(sites, "block1/conv_*") == ("block1/conv_a", "block1/conv_b")
    assert jp.core.select(sites, ["head", "conv1"]) == ("conv1", "head")
    assert jp.core.select(sites, lambda n, s: s.kind == "add") == ("block1/add",)
    with pytest.raises(ValueError, match="block1/conv_a"):
        jp.core.select(sites, "block1/conva")
    with pytest.raises(ValueError, match="Unknown site"):
        jp.core.select(sites, "nothing*")


def test_checkpointed_modules_are_inlined_with_their_values_and_gradients():
    import flax.linen as nn

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.relu(nn.Dense(5, name="dense")(x))

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2, name="head")(nn.remat(Block)(name="block")(x))

    model = Net()
    x = jax.random.normal(jax.random.key(0), (3, 4))
    variables = model.init(jax.random.key(1), x)
    f = jp.as_function(model, variables)
    assert names(f, x) == ["block/dense", "block/relu", "block", "head"]
    _, acts = jp.capture(f, ["block/dense", "block"])(x)
    _, state = model.apply(variables, x, capture_intermediates=True)
    inter = state["intermediates"]["block"]
    np.testing.assert_allclose(acts["block/dense"], inter["dense"]["__call__"][0], rtol=1e-5)
    np.testing.assert_allclose(acts["block"], inter["__call__"][0], rtol=1e-5)
    grad = lambda fn: jax.grad(lambda v: fn(v)[:, 1].sum())(x)  # noqa: E731
    np.testing.assert_allclose(grad(jp.intervene(f, {"*": lambda v: v})), grad(f), rtol=1e-5)


def test_nested_equinox_modules_are_named_by_their_attribute_paths():
    import equinox as eqx

    class Block(eqx.Module):
        lin: eqx.nn.Linear

        def __call__(self, x):
            return jax.nn.relu(self.lin(x)) + x

    class Net(eqx.Module):  # a user's class: Equinox puts no scope of its own around it
        blocks: tuple
        head: eqx.nn.Linear

        def __call__(self, x):
            for block in self.blocks:
                x = block(x)
            return self.head(x)

    k = jax.random.split(jax.random.key(0), 3)
    net = Net((Block(eqx.nn.Linear(4, 4, key=k[0])), Block(eqx.nn.Linear(4, 4, key=k[1]))),
              eqx.nn.Linear(4, 2, key=k[2]))
    f = jp.as_function(net)
    x = jax.random.normal(jax.random.key(1), (3, 4))
    assert names(f, x) == ["blocks/0/lin", "blocks/0/relu", "blocks/0/add", "blocks/0",
                           "blocks/1/lin", "blocks/1/relu", "blocks/1/add", "blocks/1", "head"]
    _, acts = jp.capture(f, ["blocks/0", "blocks/1/lin"])(x)
    first = jax.vmap(net.blocks[0])(x)
    np.testing.assert_allclose(acts["blocks/0"], first, rtol=1e-6)
    np.testing.assert_allclose(acts["blocks/1/lin"], jax.vmap(net.blocks[1].lin)(first), rtol=1e-6)


def test_sites_are_listed_in_the_order_their_values_are_computed_parents_after_children():
    import equinox as eqx

    class Net(eqx.Module):
        mlp: eqx.nn.MLP
        head: eqx.nn.Linear

        def __call__(self, x):
            return self.head(self.mlp(x))

    class Wrapped(eqx.Module):
        model: Net

        def __call__(self, x):
            return self.model(x)

    k1, k2 = jax.random.split(jax.random.key(0))
    net = Net(eqx.nn.MLP(4, 5, 8, 2, key=k1), eqx.nn.Linear(5, 3, key=k2))
    x = jnp.ones((2, 4))
    assert names(jp.as_function(net), x) == [
        "mlp/layers/0", "mlp/relu", "mlp/layers/1", "mlp/relu_1", "mlp/layers/2", "mlp", "head"]
    assert names(jp.as_function(Wrapped(net)), x)[-3:] == ["model/mlp", "model/head", "model"]
