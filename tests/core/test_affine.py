"""The affine stem split: ``f(x) == tail(*head(x))`` with `head` affine along lines, on every
model kind; the frontier where the first non-affine step reads; no split where nothing would be
saved; and integrated gradients through the split running the stem on two inputs only."""

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain
from jaxplain.attribution import _common
from jaxplain.attribution._integrated import quadrature
from jaxplain.core._affine import affine_stem
from tests.core.models import NNXMLP, equinox_mlp, linen_cnn, plain_function


class _BatchNormCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), padding=((1, 1), (2, 0)))(x)
        x = nn.relu(nn.BatchNorm(use_running_average=True)(x))
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


class _PatchTokens(nn.Module):
    """A ViT-like stem: patches, a projection, a class token and positions, then LayerNorm."""

    @nn.compact
    def __call__(self, x):
        n = x.shape[0]
        patches = x.reshape(n, 3, 2, 3, 2, 1).transpose(0, 1, 3, 2, 4, 5).reshape(n, 9, 4)
        tokens = nn.Dense(6)(patches)
        cls = self.param("cls", nn.initializers.normal(1.0), (1, 1, 6))
        tokens = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, 6)), tokens], axis=1)
        tokens = tokens + self.param("pos", nn.initializers.normal(1.0), (10, 6))
        return nn.Dense(3)(nn.LayerNorm()(tokens)[:, 0])


def _linen(module, x):
    variables = module.init(jax.random.key(1), x)
    if "batch_stats" in variables:  # running statistics away from (0, 1)
        variables = {**variables, "batch_stats": jax.tree_util.tree_map(
            lambda v: v + 0.5, variables["batch_stats"])}
    return jaxplain.as_function(module, variables)


def _models():
    x6 = jnp.asarray(np.random.default_rng(0).normal(size=(3, 6, 6, 1)), jnp.float32)
    x4 = jnp.asarray(np.random.default_rng(1).normal(size=(3, 4)), jnp.float32)
    model, variables = linen_cnn()
    return {
        "linen cnn": (jaxplain.as_function(model, variables), x6),
        "batchnorm cnn": (_linen(_BatchNormCNN(), x6), x6),
        "patch tokens": (_linen(_PatchTokens(), x6), x6),
        "nnx mlp": (jaxplain.as_function(NNXMLP(nnx.Rngs(0))), x4),
        "equinox mlp": (jaxplain.as_function(equinox_mlp()), x4),
        "plain function": (plain_function()[0], x4),
    }


MODELS = _models()


def _stem(f, x):
    return affine_stem(f, jax.ShapeDtypeStruct(x.shape, x.dtype))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_split_recomposes_the_model_and_its_head_is_affine(name):
    f, x = MODELS[name]
    stem = _stem(f, x)
    assert stem is not None
    np.testing.assert_allclose(stem.tail(*stem.head(x)), f(x), rtol=1e-5, atol=1e-5)
    baseline = jnp.asarray(np.random.default_rng(2).normal(size=x.shape), x.dtype)
    at_b, at_x = stem.head(baseline), stem.head(x)
    for a in (0.3, 1.7, -0.6):
        on_line = stem.head(baseline + a * (x - baseline))
        for got, u, v in zip(on_line, at_b, at_x, strict=True):
            np.testing.assert_allclose(got, u + a * (v - u), rtol=1e-4, atol=1e-4)


def test_the_frontier_is_what_the_first_nonlinearity_reads():
    f, (w1, b1, _) = plain_function()
    x = MODELS["plain function"][1]
    stem = _stem(f, x)
    (front,) = stem.head(x)
    np.testing.assert_allclose(front, x @ w1 + b1, rtol=1e-6)


@pytest.mark.parametrize("combine", [
    jnp.multiply, jnp.maximum, lambda a, b: a ** 2 + b, lambda a, b: jnp.abs(a) - b,
    lambda a, b: jnp.exp(a) / b,
])
def test_a_nonaffine_step_ends_the_stem(combine):
    w, v = jax.random.normal(jax.random.key(0), (2, 4, 5))
    f = lambda x: combine(x @ w, x @ v)  # noqa: E731
    x = MODELS["plain function"][1]
    stem = _stem(f, x)
    fronts = stem.head(x)
    assert len(fronts) == 2
    np.testing.assert_allclose(fronts[0], x @ w, rtol=1e-6)
    np.testing.assert_allclose(fronts[1], x @ v, rtol=1e-6)
    np.testing.assert_allclose(stem.tail(*fronts), f(x), rtol=1e-5)


def test_a_constant_selection_stays_affine_and_a_data_dependent_one_does_not():
    w = jax.random.normal(jax.random.key(0), (4, 5))
    keep = jnp.arange(5) % 2 == 0
    x = MODELS["plain function"][1]
    constant = _stem(lambda x: jax.nn.relu(jnp.where(keep, x @ w, 0.0)), x)
    assert constant.head(x)[0].shape == (3, 5)
    np.testing.assert_allclose(constant.head(x)[0], jnp.where(keep, x @ w, 0.0), rtol=1e-6)
    data = _stem(lambda x: jnp.where(x @ w > 0, x @ w, 0.0), x)
    np.testing.assert_allclose(data.head(x)[0], x @ w, rtol=1e-6)


@pytest.mark.parametrize("f", [
    lambda x: jax.nn.relu(x) @ jnp.ones((4, 2)),  # the input meets a non-affine step at once
    lambda x: jax.nn.relu(2.0 * x + 1.0).sum(axis=1, keepdims=True),  # no product to save
])
def test_no_split_where_nothing_is_saved(f):
    assert _stem(f, MODELS["plain function"][1]) is None


def _convolutions(jaxpr):
    """(lhs shape, rhs shape) of every convolution in `jaxpr` and the jaxprs inside it."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            found.append(tuple(v.aval.shape for v in eqn.invars))
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found += _convolutions(sub)
    return found


def test_integrated_gradients_runs_the_stem_on_two_inputs_only():
    f, x = MODELS["linen cnn"]
    t = jnp.array([0, 1, 2])
    jaxpr = jax.make_jaxpr(lambda x: jaxplain.attribution.integrated_gradients(
        f, x, t, steps=20))(x)
    stem_convs = [shapes for shapes in _convolutions(jaxpr) if 1 in (shapes[0][-1], shapes[1][-1])]
    assert stem_convs, "the stem convolution (one input channel) is missing"
    assert all(lhs[0] == x.shape[0] for lhs, _ in stem_convs), stem_convs


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_split_line_sum_equals_the_plain_one(name):
    f, x = MODELS[name]
    t = jnp.arange(x.shape[0]) % f(x).shape[-1]  # in range: an out-of-range target reads NaN
    baseline = 0.5 * jnp.ones_like(x)
    alphas, weights = (jnp.asarray(a, x.dtype) for a in quadrature("gausslegendre", 7))
    split = _common.line_gradient_sum(f, baseline, x, t, alphas, weights, batch_size=3)
    plain = _common.folded_gradient_sum(f, lambda a: baseline + a * (x - baseline), t, alphas,
                                        weights, None, x.shape)
    np.testing.assert_allclose(split, plain, rtol=1e-4, atol=1e-5 * float(jnp.abs(plain).max()))
