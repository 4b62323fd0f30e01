"""Names inside loops: the same quantity has the same name whatever the spelling and step."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain.core import _program
from jaxplain.lrp import Composite, Epsilon, Flat, ZPlus

D, DEPTH = 6, 4


class Block(nn.Module):
    @nn.compact
    def __call__(self, h, _=None):
        return nn.relu(nn.Dense(D, name="lin")(h)), None


class Inner(nn.Module):
    @nn.compact
    def __call__(self, h):
        return nn.relu(nn.Dense(D, name="lin")(h))


class Stack(nn.Module):
    """The same four layers as an `nn.scan`, an `nn.scan` of `nn.remat`, an `nn.remat_scan`."""

    mode: str = "scan"

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(D, name="inp")(x)
        if self.mode == "remat_scan":
            return nn.Dense(2, name="out")(nn.remat_scan(Inner, lengths=(2, 2))(name="blocks")(h))
        layer = nn.remat(Block) if self.mode == "remat" else Block
        blocks = nn.scan(layer, variable_axes={"params": 0}, split_rngs={"params": True},
                         length=DEPTH)
        h, _ = blocks(name="blocks")(h, None)
        return nn.Dense(2, name="out")(h)


@pytest.fixture(scope="module")
def stacks():
    x = jax.random.normal(jax.random.key(0), (3, 5))
    variables = Stack("scan").init(jax.random.key(1), x)
    params = dict(variables["params"])
    nested = {**params, "blocks": jax.tree_util.tree_map(
        lambda a: a.reshape((2, 2) + a.shape[1:]), params["blocks"])}
    fs = {"scan": jp.as_function(Stack("scan"), variables),
          "remat": jp.as_function(Stack("remat"), variables),
          "remat_scan": jp.as_function(Stack("remat_scan"), {"params": nested})}
    for f in fs.values():
        np.testing.assert_allclose(f(x), fs["scan"](x), rtol=1e-6)
    return fs, x


@pytest.mark.parametrize("mode", ["remat", "remat_scan"])
def test_remat_keeps_the_names_of_the_scanned_layers(stacks, mode):
    fs, x = stacks
    names = [s.name for s in jp.sites(fs["scan"], x)]
    assert "blocks/2/lin" in names
    assert [s.name for s in jp.sites(fs[mode], x)] == names
    _, plain = jp.capture(fs["scan"], "blocks/*/relu")(x)
    _, remat = jp.capture(fs[mode], "blocks/*/relu")(x)
    assert sorted(remat) == sorted(plain) == [f"blocks/{i}/relu" for i in range(DEPTH)]
    for name in plain:
        np.testing.assert_allclose(remat[name], plain[name], rtol=1e-6)


def test_a_composite_names_the_same_layer_with_and_without_remat(stacks):
    fs, x = stacks
    target = jnp.zeros(3, dtype=jnp.int32)
    rules = Composite(default=Epsilon(0.1), first=Flat(), layers=(("blocks/2/lin", ZPlus()),))
    plain = jp.attribution.lrp(fs["scan"], x, target, rules=rules)
    everywhere = jp.attribution.lrp(fs["scan"], x, target,
                                    rules=Composite(default=Epsilon(0.1), first=Flat()))
    assert float(jnp.abs(plain - everywhere).max()) > 1e-4  # the layer rule acts
    np.testing.assert_allclose(jp.attribution.lrp(fs["remat"], x, target, rules=rules), plain,
                               rtol=1e-5, atol=1e-6)


H, T = 4, 3


class Recurrent(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.RNN(nn.LSTMCell(H), name="rnn")(x)[:, -1]


@pytest.fixture(scope="module")
def lstm():
    x = jax.random.normal(jax.random.key(2), (2, T, 3))
    variables = Recurrent().init(jax.random.key(3), x)
    return jp.as_function(Recurrent(), variables), variables, x


def _cell_states(variables, x):
    """c_t for t = 0 .. T-1, from the cell itself."""
    cell, params = nn.LSTMCell(H), {"params": variables["params"]["LSTMCell_0"]}
    carry, states = cell.initialize_carry(jax.random.key(0), x[:, 0].shape), []
    for t in range(T):
        carry, _ = cell.apply(params, carry, x[:, t])
        states.append(carry[0])
    return states


def test_an_lstm_names_the_same_quantity_alike_at_every_step(lstm):
    f, variables, x = lstm
    names = {s.name for s in jp.sites(f, x)}
    steps = [{n.split("/", 3)[3] for n in names if n.startswith(f"rnn/LSTMCell_0/{t}/")}
             for t in range(T)]
    assert steps[1] == steps[2]
    assert steps[0] < steps[1]  # step 0 lacks the constant recurrent branch, nothing renamed
    assert {"hi", "hf", "hg", "ho"} <= steps[1] - steps[0]
    cells = _cell_states(variables, x)
    _, acts = jp.capture(f, "rnn/LSTMCell_0/*/add_4")(x)
    assert sorted(acts) == [f"rnn/LSTMCell_0/{t}/add_4" for t in range(T)]
    for t in range(T):  # the cell state c_t at every step, step 0 included
        np.testing.assert_allclose(acts[f"rnn/LSTMCell_0/{t}/add_4"], cells[t], atol=1e-5)


def test_a_constant_step_site_is_refused_saying_so(lstm):
    f, _, x = lstm
    with pytest.raises(ValueError, match=r"'rnn/LSTMCell_0/0/hi' is a constant at this step.*"
                                         r"does not depend on x"):
        jp.capture(f, "rnn/LSTMCell_0/0/hi")(x)
    with pytest.raises(ValueError, match="is a constant at this step"):
        jp.capture(f, "rnn/LSTMCell_0/0/add")(x)  # a gate's sum with the recurrent branch
    with pytest.raises(ValueError, match="Unknown site"):
        jp.capture(f, "rnn/LSTMCell_0/0/nothing")(x)


def test_names_of_a_model_without_loops_are_unchanged():
    w = jnp.ones((3, 3))

    def f(x):
        h = jax.nn.relu(x @ w) + jax.nn.relu(x @ w.T)
        return jnp.tanh(h @ w) + x

    assert [s.name for s in jp.sites(f, jnp.ones((2, 3)))] == [
        "linear", "relu", "linear_1", "relu_1", "add", "linear_2", "tanh", "add_1"]


def test_sites_in_a_loop_over_the_budget_are_refused_saying_why(monkeypatch, lstm):
    f, _, x = lstm
    monkeypatch.setattr(_program, "UNROLL_BUDGET", 10)
    g = jp.as_function(Recurrent(), lstm[1])  # a new function: traced under the small budget
    for name in ["rnn/LSTMCell_0/1", "rnn/LSTMCell_0/1/tanh_1", "rnn/LSTMCell_0/*/tanh_1"]:
        with pytest.raises(ValueError, match="inside a `scan` loop too long to unroll"):
            jp.capture(g, name)(x)
    with pytest.raises(ValueError, match="Unknown site"):
        jp.capture(g, "rnn/nothing_*")(x)


WI, WH = jnp.linspace(-1, 1, 3 * H).reshape(3, H), jnp.linspace(1, -1, H * H).reshape(H, H)


def _cell(h, xt):
    return jnp.tanh(xt @ WI + h @ WH)


def test_a_plain_scan_names_its_matrix_products_as_a_python_loop_does():
    x = jax.random.normal(jax.random.key(4), (2, T, 3))

    def scanned(x):
        return jax.lax.scan(lambda h, xt: (_cell(h, xt),) * 2, jnp.zeros((2, H)),
                            jnp.swapaxes(x, 0, 1))[0]

    def looped(x):
        h = jnp.zeros((2, H))
        for t in range(T):
            h = _cell(h, x[:, t])
        return h

    names = [s.name for s in jp.sites(scanned, x)]
    assert [n for n in names if n.startswith("scan/1/")] == [
        "scan/1/linear", "scan/1/linear_1", "scan/1/add", "scan/1/tanh"]
    assert [n for n in names if n.startswith("scan/0/")] == ["scan/0/linear", "scan/0/tanh"]
    _, a = jp.capture(scanned, "scan/*/linear_1")(x)
    _, b = jp.capture(looped, ["linear_2", "linear_4"])(x)  # h @ WH at steps 1 and 2
    np.testing.assert_allclose(a["scan/1/linear_1"], b["linear_2"], rtol=1e-6)
    np.testing.assert_allclose(a["scan/2/linear_1"], b["linear_4"], rtol=1e-6)
