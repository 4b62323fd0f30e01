"""Sites are batch first: where ``vmap`` keeps a value's batch axis elsewhere (an Equinox layer
vmapped over tokens inside the adapter's vmap over the batch), the kernel presents the value as
the model's code sees it, so every per-example method gets one row per example."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain.attribution import activation_x_gradient
from jaxplain.core._batch import SHARED, batch_axes
from jaxplain.core._capture import program_of

_K = jax.random.split(jax.random.key(0), 8)


class Attend(eqx.Module):
    attn: eqx.nn.MultiheadAttention
    head: eqx.nn.Linear

    def __call__(self, x):  # one (tokens, features) sequence
        return self.head(self.attn(x, x, x).mean(0))


ENC = Attend(eqx.nn.MultiheadAttention(2, 8, key=_K[0]), eqx.nn.Linear(8, 3, key=_K[1]))
X = jax.random.normal(_K[2], (3, 6, 8))
PROJ = ["attn/query_proj", "attn/key_proj", "attn/value_proj", "attn/output_proj"]


def twin(x):
    """`ENC` written batch first in plain JAX, with the same scopes."""
    b, t, e = x.shape
    a = ENC.attn
    with jax.named_scope("attn"):
        with jax.named_scope("query_proj"):
            q = x @ a.query_proj.weight.T
        with jax.named_scope("key_proj"):
            k = x @ a.key_proj.weight.T
        with jax.named_scope("value_proj"):
            v = x @ a.value_proj.weight.T
        q, k, v = (z.reshape(b, t, 2, 4) for z in (q, k, v))
        w = jax.nn.softmax(jnp.einsum("bthd,bshd->bhts", q / 2.0, k), axis=-1)
        o = jnp.einsum("bhts,bshd->bthd", w, v).reshape(b, t, e)
        with jax.named_scope("output_proj"):
            o = o @ a.output_proj.weight.T
    with jax.named_scope("head"):
        return o.mean(1) @ ENC.head.weight.T + ENC.head.bias


def test_the_twin_computes_the_same_function():
    np.testing.assert_allclose(twin(X), jp.as_function(ENC)(X), rtol=1e-5, atol=1e-6)


def test_equinox_attention_projections_are_batch_first_as_in_the_twin():
    f = jp.as_function(ENC)
    got = [(s.name, s.shape, s.channel_axis) for s in jp.sites(f, X)]
    assert got == [(s.name, s.shape, s.channel_axis) for s in jp.sites(twin, X)]
    assert got[0] == ("attn/query_proj", (3, 6, 8), -1)


def test_capture_and_intervene_match_the_twin():
    f = jp.as_function(ENC)
    _, got = jp.capture(f, PROJ)(X)
    _, want = jp.capture(twin, PROJ)(X)
    true_q = jax.vmap(jax.vmap(ENC.attn.query_proj))(X)
    np.testing.assert_allclose(got["attn/query_proj"], true_q, rtol=1e-5, atol=1e-6)
    mask = jax.random.normal(_K[3], (3, 6, 8))
    for name in PROJ:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
        edit = {name: lambda v: v * mask}
        np.testing.assert_allclose(jp.intervene(f, edit)(X), jp.intervene(twin, edit)(X),
                                   rtol=1e-5, atol=1e-6, err_msg=name)


def test_per_example_methods_keep_examples_apart():
    f = jp.as_function(ENC)
    whole = activation_x_gradient(f, X, 0, site="attn/query_proj")
    first = activation_x_gradient(f, X[:1], 0, site="attn/query_proj")
    assert whole.shape == (3, 6, 8) and first.shape == (1, 6, 8)
    np.testing.assert_allclose(whole[:1], first, rtol=1e-5, atol=1e-6)


class Encoder(eqx.Module):
    """A small transformer block: embedding, LayerNorm, attention, MLP, residuals."""

    embed: eqx.nn.Linear
    ln: eqx.nn.LayerNorm
    attn: eqx.nn.MultiheadAttention
    mlp: eqx.nn.MLP
    head: eqx.nn.Linear

    def __call__(self, x):  # (tokens, 4)
        h = jax.vmap(self.embed)(x)
        a = jax.vmap(self.ln)(h)
        h = h + self.attn(a, a, a)
        h = h + jax.vmap(self.mlp)(h)
        return self.head(h.mean(0))


@pytest.mark.parametrize("batch", [1, 3])
def test_every_site_of_a_transformer_holds_one_row_per_example(batch):
    enc = Encoder(eqx.nn.Linear(4, 8, key=_K[4]), eqx.nn.LayerNorm(8),
                  eqx.nn.MultiheadAttention(2, 8, key=_K[5]), eqx.nn.MLP(8, 8, 16, 1, key=_K[6]),
                  eqx.nn.Linear(8, 3, key=_K[7]))
    f = jp.as_function(enc)
    x = jax.random.normal(_K[3], (4, 6, 4))[:batch]
    sites = jp.sites(f, x)
    assert all(s.shape[0] == batch for s in sites), [(s.name, s.shape) for s in sites]
    _, whole = jp.capture(f, [s.name for s in sites])(x)
    for k in range(batch):  # example k's values do not depend on the rest of the batch
        _, alone = jp.capture(f, [s.name for s in sites])(x[k:k + 1])
        for s in sites:
            np.testing.assert_allclose(whole[s.name][k:k + 1], alone[s.name], rtol=1e-4,
                                       atol=1e-5, err_msg=s.name)
    shapes = {s.name: s.shape for s in sites}
    for name in ["attn/query_proj", "attn/output_proj", "mlp/layers/0", "embed"]:
        assert shapes[name][1:] in ((6, 8), (6, 16)), (name, shapes[name])


class Twice(eqx.Module):
    lin: eqx.nn.Linear

    def __call__(self, x):  # W @ x is used twice before vmap moves its batch axis first
        h = self.lin(x)
        return h + jnp.tanh(h)


def test_a_value_used_twice_is_presented_with_its_batch_axis_moved_first():
    model = Twice(eqx.nn.Linear(4, 5, use_bias=False, key=_K[0]))
    f = jp.as_function(model)
    x = jax.random.normal(_K[1], (3, 4))
    program, site_map = program_of(f, x)
    assert batch_axes(program)[site_map.ids["lin"]] == 1  # (features, batch) in the program
    assert {s.name: s.shape for s in jp.sites(f, x)} == {"lin": (3, 5), "tanh": (3, 5), "add": (3, 5)}
    _, acts = jp.capture(f, ["lin", "tanh"])(x)
    h = jax.vmap(model.lin)(x)
    np.testing.assert_allclose(acts["lin"], h, rtol=1e-6)
    np.testing.assert_allclose(acts["tanh"], jnp.tanh(h), rtol=1e-6)
    edited = jp.intervene(f, {"lin": lambda v: v.at[:, 0].set(0.0)})(x)
    h0 = h.at[:, 0].set(0.0)
    np.testing.assert_allclose(edited, h0 + jnp.tanh(h0), rtol=1e-6)


@pytest.mark.filterwarnings("ignore:The model's output for one example depends")
def test_batch_axes_follow_dot_generals_and_reductions():
    w = jnp.ones((5, 4))

    def f(x):
        h = jnp.einsum("oi,bi->ob", w, x)      # batch on axis 1
        m = h.mean(axis=1, keepdims=True)      # over the batch: shared by every example
        return (h - m).T

    x = jnp.ones((3, 4))
    program, _ = program_of(f, x)
    states = batch_axes(program)
    by_prim = {}
    for node in program.nodes:
        if node.outs and node.outs[0] in states:
            by_prim.setdefault(node.prim, states[node.outs[0]])
    assert by_prim["dot_general"] == 1
    assert by_prim["reduce_sum"] == SHARED
    assert by_prim["sub"] == 1 and by_prim["transpose"] == 0


def _nnx_batchnorm_net():
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(4, rngs=rngs)
            self.head = nnx.Linear(4, 3, rngs=rngs)

        def __call__(self, x, use_running_average: bool = False):  # batch statistics by default
            h = nnx.relu(self.bn(self.conv(x), use_running_average=use_running_average))
            return self.head(h.mean((1, 2)))

    return Net(nnx.Rngs(0))


def test_batch_statistics_are_no_relu_sites_and_the_mixing_is_reported():
    x = jax.random.uniform(_K[0], (4, 8, 8, 3))
    f = jp.as_function(_nnx_batchnorm_net())  # the call-time default: batch statistics
    assert jp.core.mixes_batch(f, x) and not jp.core.mixes_batch(f, x[:1])
    with pytest.warns(jp.core.BatchMixingWarning, match="depends on the other examples"):
        sites = jp.sites(f, x[:2])
    assert [s.name for s in sites] == ["conv", "bn", "relu", "head"]  # no "bn/relu" of shape (2,)
    assert jp.core.relu_sites(f, x) == ("relu",)
    inference = jp.as_function(_nnx_batchnorm_net(), use_running_average=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [s.name for s in jp.sites(inference, x)] == ["conv", "bn", "relu", "head"]
        jp.sites(f, x[:1])  # one example: nothing to mix


def test_rules_see_batch_first_values_where_vmap_keeps_the_batch_elsewhere():
    """A bias-free Equinox MLP computes ``W @ x`` and its ReLU as ``(features, batch)``; DeepLIFT
    splits ``[x; baseline]`` on the first axis, so it needs them batch first."""
    mlp = eqx.nn.MLP(4, 3, 8, 2, use_bias=False, use_final_bias=False, key=_K[0])
    f = jp.as_function(mlp)

    def twin(x):
        for layer in mlp.layers[:-1]:
            x = jax.nn.relu(x @ layer.weight.T)
        return x @ mlp.layers[-1].weight.T

    x = jax.random.normal(_K[1], (5, 4))
    baseline = jnp.zeros_like(x)
    got = jp.attribution.deeplift(f, x, 0, baseline=baseline)
    np.testing.assert_allclose(got, jp.attribution.deeplift(twin, x, 0, baseline=baseline),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), f(x)[:, 0] - f(baseline)[:, 0], rtol=1e-4, atol=1e-6)
