"""The kernel's contract on each kind of model: a Flax Linen CNN with a residual block, a Flax
NNX MLP, an Equinox MLP and a plain function with `jax.named_scope`.

For each: captured values equal the model's own intermediates (Flax's `capture_intermediates`
for Linen, the submodules called by hand otherwise), zeroing channels with `intervene` equals
the model with those filters' weights and biases zeroed, an identity intervention keeps outputs
and gradients, all of it under jit, vmap and jvp, and a second call compiles nothing.
"""

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain as jp
from tests.core import models


@dataclasses.dataclass(frozen=True)
class Case:
    f: Callable  # the model as jaxplain sees it
    x: jax.Array
    site: str
    value: Callable  # x -> the site's value, computed by hand
    zeroed: Callable  # channels -> the model with those output channels of the site's layer zeroed


def linen_case():
    model, variables = models.linen_cnn()

    def value(x):
        _, state = model.apply(variables, x, capture_intermediates=True)
        return state["intermediates"]["block1"]["conv_a"]["__call__"][0]

    def zeroed(channels):
        params = jax.tree_util.tree_map(lambda a: a, variables["params"])
        layer = params["block1"]["conv_a"]
        layer["kernel"] = layer["kernel"].at[..., channels].set(0.0)
        layer["bias"] = layer["bias"].at[channels].set(0.0)
        return lambda x: model.apply({"params": params}, x)

    x = jax.random.normal(jax.random.key(1), (3, 6, 6, 1))
    return Case(jp.as_function(model, variables), x, "block1/conv_a", value, zeroed)


def nnx_case():
    model = models.NNXMLP(nnx.Rngs(0))

    def zeroed(channels):
        edited = nnx.clone(model)
        layer = edited.blocks[0]
        layer.kernel[...] = layer.kernel[...].at[:, channels].set(0.0)
        layer.bias[...] = layer.bias[...].at[channels].set(0.0)
        return edited

    value = lambda x: model.blocks[0](jax.nn.relu(model.lin1(x)))  # noqa: E731
    x = jax.random.normal(jax.random.key(2), (5, 4))
    return Case(jp.as_function(model), x, "blocks/0", value, zeroed)


def equinox_case():
    mlp = models.equinox_mlp()

    def zeroed(channels):
        layer = mlp.layers[1]
        edited = eqx.tree_at(lambda m: (m.layers[1].weight, m.layers[1].bias), mlp,
                             (layer.weight.at[channels].set(0.0), layer.bias.at[channels].set(0.0)))
        return jax.vmap(edited)

    value = jax.vmap(lambda v: mlp.layers[1](jax.nn.relu(mlp.layers[0](v))))
    x = jax.random.normal(jax.random.key(3), (5, 4))
    return Case(jp.as_function(mlp), x, "layers/1", value, zeroed)


def plain_case():
    f, (w1, b1, w2) = models.plain_function()

    def zeroed(channels):
        w, b = w1.at[:, channels].set(0.0), b1.at[channels].set(0.0)
        return lambda x: jax.nn.relu(x @ w + b) @ w2

    x = jax.random.normal(jax.random.key(4), (5, 4))
    return Case(f, x, "proj", lambda x: x @ w1 + b1, zeroed)


CASES = {"linen": linen_case, "nnx": nnx_case, "equinox": equinox_case, "plain": plain_case}
CLOSE = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    return CASES[request.param]()


def test_capture_equals_the_models_own_intermediates_under_jit_vmap_and_jvp(case):
    g = jp.capture(case.f, case.site)
    y, acts = g(case.x)
    np.testing.assert_allclose(y, case.f(case.x), **CLOSE)
    np.testing.assert_allclose(acts[case.site], case.value(case.x), **CLOSE)
    _, jitted = jax.jit(g)(case.x)
    np.testing.assert_allclose(jitted[case.site], case.value(case.x), **CLOSE)
    _, mapped = jax.vmap(lambda xi: g(xi[None]))(case.x)
    np.testing.assert_allclose(mapped[case.site][:, 0], case.value(case.x), **CLOSE)
    tangent = jax.random.normal(jax.random.key(9), case.x.shape)
    _, dacts = jax.jvp(lambda v: g(v)[1][case.site], (case.x,), (tangent,))
    _, expected = jax.jvp(case.value, (case.x,), (tangent,))
    np.testing.assert_allclose(dacts, expected, **CLOSE)


def test_zeroing_channels_equals_the_hand_edited_model(case):
    channels = jnp.array([1, 2])
    width = jp.capture(case.f, case.site)(case.x)[1][case.site].shape[-1]
    mask = jnp.ones(width).at[channels].set(0.0)
    h = jp.intervene(case.f, {case.site: lambda v: v * mask})
    expected = case.zeroed(channels)(case.x)
    np.testing.assert_allclose(h(case.x), expected, **CLOSE)
    np.testing.assert_allclose(jax.jit(h)(case.x), expected, **CLOSE)
    np.testing.assert_allclose(jax.vmap(lambda xi: h(xi[None])[0])(case.x), expected, **CLOSE)
    assert not np.allclose(expected, case.f(case.x), **CLOSE)


def test_identity_intervention_keeps_outputs_and_gradients(case):
    same = jp.intervene(case.f, {"*": lambda v: v})
    loss = lambda fn: lambda v: fn(v)[:, 1].sum()  # noqa: E731
    np.testing.assert_allclose(same(case.x), case.f(case.x), **CLOSE)
    expected = jax.grad(loss(case.f))(case.x)
    np.testing.assert_allclose(jax.grad(loss(same))(case.x), expected, **CLOSE)
    per_example = jax.jit(jax.vmap(jax.grad(lambda v: same(v[None])[0, 1])))(case.x)
    np.testing.assert_allclose(per_example, expected, **CLOSE)


def test_a_second_call_compiles_nothing(case):
    other = case.x + 1.0
    jp.capture(case.f, case.site)(case.x)
    with models.Compiles() as compiles:
        jax.block_until_ready(jp.capture(case.f, case.site)(other))
    assert compiles.count == 0
