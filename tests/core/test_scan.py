"""Scans are unrolled: sites inside a loop over layers or time steps, one per iteration."""

import equinox as eqx
import flax.linen as nn
import jax
from flax import nnx
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain.lrp import EpsilonPlusFlat
from tests._jaxpr import primitives

DEPTH = 3


class Block(nn.Module):
    @nn.compact
    def __call__(self, h, _):
        return nn.relu(nn.Dense(8, name="lin")(h)) + h, None


class Scanned(nn.Module):
    """Three residual blocks as one `nn.scan` over stacked parameters."""

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(8, name="inp")(x)
        blocks = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=DEPTH)
        h, _ = blocks(name="blocks")(h, None)
        return nn.Dense(3, name="out")(h)


class Unrolled(nn.Module):
    """The same network with one module per block."""

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(8, name="inp")(x)
        for i in range(DEPTH):
            h, _ = Block(name=f"blocks_{i}")(h, None)
        return nn.Dense(3, name="out")(h)


@pytest.fixture(scope="module")
def twins():
    x = jax.random.normal(jax.random.key(0), (5, 4))
    variables = Scanned().init(jax.random.key(1), x)
    params = dict(variables["params"])
    stacked = params.pop("blocks")
    for i in range(DEPTH):
        params[f"blocks_{i}"] = jax.tree_util.tree_map(lambda a, i=i: a[i], stacked)
    scanned = jp.as_function(Scanned(), variables)
    unrolled = jp.as_function(Unrolled(), {"params": params})
    np.testing.assert_allclose(scanned(x), unrolled(x), rtol=1e-6)
    return scanned, unrolled, x


def test_a_linen_scan_over_layers_has_one_site_per_layer(twins):
    scanned, unrolled, x = twins
    names = [s.name for s in jp.sites(scanned, x)]
    assert names[:5] == ["inp", "blocks/0/lin", "blocks/0/relu", "blocks/0/add", "blocks/0"]
    assert names == [n.replace("blocks_", "blocks/") for n in (s.name for s in jp.sites(unrolled, x))]
    _, acts = jp.capture(scanned, "blocks/*/relu")(x)
    _, ref = jp.capture(unrolled, "blocks_*/relu")(x)
    for i in range(DEPTH):
        np.testing.assert_allclose(acts[f"blocks/{i}/relu"], ref[f"blocks_{i}/relu"], rtol=1e-6)


def test_the_loop_is_unrolled_only_for_sites_inside_it(twins):
    scanned, _, x = twins
    assert "scan" in primitives(jax.make_jaxpr(jp.capture(scanned, ["inp", "out"]))(x))
    assert "scan" not in primitives(jax.make_jaxpr(jp.capture(scanned, ["inp", "blocks/2"]))(x))
    # a scope whose value the loop computes is read from the unrolled loop as well
    _, acts = jp.capture(scanned, "blocks/2")(x)
    _, relus = jp.capture(scanned, "blocks/2/add")(x)
    np.testing.assert_allclose(acts["blocks/2"], relus["blocks/2/add"], rtol=1e-6)


class StackedMLP(eqx.Module):
    """An Equinox model that scans over a stack of three Linear layers."""

    inp: eqx.nn.Linear
    layers: eqx.nn.Linear
    out: eqx.nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.inp = eqx.nn.Linear(4, 8, key=k1)
        self.layers = eqx.filter_vmap(lambda k: eqx.nn.Linear(8, 8, key=k))(jax.random.split(k2, DEPTH))
        self.out = eqx.nn.Linear(8, 3, key=k3)

    def __call__(self, x):
        arrays, static = eqx.partition(self.layers, eqx.is_array)

        def step(h, layer_arrays):
            return jax.nn.relu(eqx.combine(layer_arrays, static)(h)), None

        return self.out(jax.lax.scan(step, self.inp(x), arrays)[0])


def test_an_equinox_scan_over_stacked_layers():
    model, x = StackedMLP(jax.random.key(6)), jax.random.normal(jax.random.key(7), (2, 4))
    f = jp.as_function(model)
    assert [s.name for s in jp.sites(f, x)] == ["inp"] + [
        n for i in range(DEPTH) for n in (f"layers/{i}/relu", f"layers/{i}")] + ["out"]
    _, acts = jp.capture(f, "layers/*/relu")(x)
    h = jax.vmap(model.inp)(x)
    for i in range(DEPTH):
        h = jax.nn.relu(h @ model.layers.weight[i].T + model.layers.bias[i])
        np.testing.assert_allclose(acts[f"layers/{i}/relu"], h, rtol=1e-5, atol=1e-6)


class NNXBlock(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(8, 8, rngs=rngs)

    def __call__(self, h):
        return nnx.relu(self.lin(h)) + h


class NNXScanned(nnx.Module):
    """The residual blocks as NNX writes a scan over layers: nnx.vmap to make, nnx.scan to run."""

    def __init__(self, rngs):
        self.inp = nnx.Linear(4, 8, rngs=rngs)

        @nnx.split_rngs(splits=DEPTH)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(rngs):
            return NNXBlock(rngs)

        self.blocks = make(rngs)
        self.out = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def step(h, block):
            return block(h)

        return self.out(step(self.inp(x), self.blocks))


def test_an_nnx_scan_over_layers_is_named_as_the_linen_one(twins):
    scanned, _, x = twins
    model = NNXScanned(nnx.Rngs(8))
    f = jp.as_function(model)
    assert [s.name for s in jp.sites(f, x)] == [s.name for s in jp.sites(scanned, x)]
    _, acts = jp.capture(f, "blocks/*/relu")(x)
    h = model.inp(x)
    for i in range(DEPTH):
        relu = jax.nn.relu(h @ model.blocks.lin.kernel[...][i] + model.blocks.lin.bias[...][i])
        np.testing.assert_allclose(acts[f"blocks/{i}/relu"], relu, rtol=1e-5, atol=1e-6)
        h = relu + h
    np.testing.assert_allclose(jax.jit(f)(x), model(x), rtol=1e-5, atol=1e-6)


def test_intervening_in_one_iteration_changes_only_that_layer(twins):
    scanned, unrolled, x = twins
    mask = jnp.array([0.0, 1.0] * 4)
    edited = jp.intervene(scanned, {"blocks/1/relu": lambda v: v * mask})(x)
    reference = jp.intervene(unrolled, {"blocks_1/relu": lambda v: v * mask})(x)
    np.testing.assert_allclose(edited, reference, rtol=1e-6)
    assert not np.allclose(edited, scanned(x))


def test_rules_apply_inside_the_loop(twins):
    # LRP's rules, DeepLIFT's rescale and the pathway masks act at every layer of the scan, so
    # the scanned network is explained exactly as the one written out layer by layer
    scanned, unrolled, x = twins
    target = jnp.argmax(scanned(x), axis=-1)
    for method in (lambda f: jp.attribution.lrp(f, x, target, rules=EpsilonPlusFlat()),
                   lambda f: jp.attribution.deeplift(f, x, target),
                   lambda f: jp.pathways.pathway_gradient(f, x, target, keep=0.3)):
        got, want = method(scanned), method(unrolled)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # (and they are not the plain gradient, which a loop run as one opaque node would give)
    gradient = jp.attribution.gradient(scanned, x, target)
    assert not np.allclose(jp.attribution.lrp(scanned, x, target, rules=EpsilonPlusFlat()),
                           gradient * x, rtol=1e-2)


WX = jax.random.normal(jax.random.key(2), (3, 6))
WH = jax.random.normal(jax.random.key(3), (6, 6)) * 0.5
T = 4


def _step(h, xt):
    h = jnp.tanh(xt @ WX + h @ WH)
    return h, h


def _rnn(reverse=False):
    def f(x):  # (batch, time, 3) -> (batch, 6)
        h0 = jnp.zeros((x.shape[0], 6), x.dtype)
        _, hs = jax.lax.scan(_step, h0, jnp.swapaxes(x, 0, 1), reverse=reverse)
        return hs.mean(axis=0)
    return f


def _hand_rnn(x, reverse=False, edit=None):
    h, hs = jnp.zeros((x.shape[0], 6)), [None] * T
    for t in (reversed(range(T)) if reverse else range(T)):
        h = jnp.tanh(x[:, t] @ WX + h @ WH)
        if edit is not None and edit[0] == t:
            h = edit[1](h)
        hs[t] = h
    return jnp.stack(hs)


@pytest.mark.parametrize("reverse", [False, True])
def test_a_recurrence_over_time_steps_is_named_by_the_index_of_its_input(reverse):
    f, x = _rnn(reverse), jax.random.normal(jax.random.key(4), (2, T, 3))
    # in program order; after the first step the input term and the state term meet in an add
    order = list(reversed(range(T))) if reverse else list(range(T))
    assert [s.name for s in jp.sites(f, x)] == [
        f"scan/{order[0]}/linear", f"scan/{order[0]}/tanh", f"scan/{order[0]}"] + [
        n for t in order[1:] for n in (f"scan/{t}/linear", f"scan/{t}/linear_1", f"scan/{t}/add",
                                       f"scan/{t}/tanh", f"scan/{t}")]
    y, acts = jp.capture(f, "scan/*/tanh")(x)
    hs = _hand_rnn(x, reverse)
    np.testing.assert_allclose(y, hs.mean(0), rtol=1e-5)
    for t in range(T):
        np.testing.assert_allclose(acts[f"scan/{t}/tanh"], hs[t], rtol=1e-5)
    edit = (2, lambda h: h.at[:, 0].set(0.0))
    np.testing.assert_allclose(jp.intervene(f, {"scan/2/tanh": edit[1]})(x),
                               _hand_rnn(x, reverse, edit).mean(0), rtol=1e-5)
    grad = jax.grad(lambda v: jp.intervene(f, {})(v).sum())(x)
    np.testing.assert_allclose(grad, jax.grad(lambda v: f(v).sum())(x), rtol=1e-5)


def test_fori_loops_nested_and_repeated_scans():
    def f(x):
        def layer(_, h):
            with jax.named_scope("layer"):
                return jax.nn.relu(h @ WH)

        h = jax.lax.fori_loop(0, 2, layer, x)  # a static trip count: a scan over a counter
        inner = lambda h, _: (jnp.tanh(h), None)  # noqa: E731
        h = jax.lax.scan(lambda h, _: (jax.lax.scan(inner, h, None, length=2)[0], None), h, None,
                         length=2)[0]
        return jax.lax.scan(lambda h, _: (jax.nn.sigmoid(h), None), h, None, length=1)[0]

    x = jax.random.normal(jax.random.key(5), (2, 6))
    names = [s.name for s in jp.sites(f, x)]
    assert names == ["layer/0/relu", "layer/0", "layer/1/relu", "layer/1",
                     "scan/0/scan/0/tanh", "scan/0/scan/0", "scan/0/scan/1/tanh", "scan/0/scan/1",
                     "scan/0", "scan/1/scan/0/tanh", "scan/1/scan/0", "scan/1/scan/1/tanh",
                     "scan/1/scan/1", "scan/1", "scan_1/0/sigmoid", "scan_1/0"]
    _, acts = jp.capture(f, ["layer/1/relu", "scan/1/scan/0/tanh"])(x)
    h = jax.nn.relu(jax.nn.relu(x @ WH) @ WH)
    np.testing.assert_allclose(acts["layer/1/relu"], h, rtol=1e-5)
    np.testing.assert_allclose(acts["scan/1/scan/0/tanh"], jnp.tanh(jnp.tanh(jnp.tanh(h))), rtol=1e-5)


def test_a_scan_over_an_array_of_typed_keys_is_unrolled():
    w = jax.random.normal(jax.random.key(0), (6, 3))
    keys = jax.random.split(jax.random.key(1), 3)

    def f(x):
        def body(h, k):
            return h + 0.1 * jax.random.normal(k, h.shape), None
        return jax.lax.scan(body, x @ w, keys)[0]

    x = jax.random.normal(jax.random.key(2), (2, 6))
    with pytest.warns(jp.core.StochasticModelWarning):
        got = jp.attribution.gradient(f, x, 0)
    np.testing.assert_allclose(got, jax.grad(lambda x: f(x)[:, 0].sum())(x), rtol=1e-6)
    _, acts = jp.capture(f, "scan/1")(x)
    want = x @ w + 0.1 * (jax.random.normal(keys[0], (2, 3)) + jax.random.normal(keys[1], (2, 3)))
    np.testing.assert_allclose(acts["scan/1"], want, rtol=1e-5, atol=1e-6)
