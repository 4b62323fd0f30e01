"""LRP through gated products: ``Composite(products=SignalTakeAll())`` gives the whole relevance
of ``gate * signal`` to the signal, which conserves it through a squeeze-and-excitation block
and an LSTM-style gate, where the plain gradient hands it to both factors."""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution
from jaxplain.lrp import Composite, Epsilon, SignalTakeAll

LRP0 = dict(default=Epsilon(0.0), stabilizer=0.0)


class SENet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), use_bias=False)(x))
        gate = jax.nn.sigmoid(nn.Dense(8, use_bias=False)(
            nn.relu(nn.Dense(4, use_bias=False)(x.mean((1, 2))))))
        x = x * gate[:, None, None, :]
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, use_bias=False)(x))
        return nn.Dense(5, use_bias=False)(x.mean((1, 2)))


def _se():
    x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1), jnp.float64)
    variables = jax.tree.map(lambda a: a.astype(jnp.float64), SENet().init(jax.random.key(1), x))
    return jp.as_function(SENet(), variables), x


_W = np.random.default_rng(2).standard_normal((2, 6, 6))  # float64 weights, not drawn in f
_V = np.random.default_rng(3).standard_normal((6, 3))


def _gated(x):  # an LSTM-style gate of the same shape as its signal
    return (jax.nn.sigmoid(x @ _W[0]) * jax.nn.relu(x @ _W[1])) @ _V


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


def test_the_se_gate_passes_no_relevance_and_relevance_is_conserved():
    f, x = _se()
    t = jnp.argmax(f(x), -1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plain = attribution.lrp(f, x, t, rules=Composite(**LRP0))
    assert any("multiplies two values" in str(w.message) for w in caught)
    assert np.max(np.abs(np.asarray(plain.sum((1, 2, 3))) - 1)) > 0.01  # not conserved
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gated = attribution.lrp(f, x, t, rules=Composite(**LRP0, products=SignalTakeAll()))
    assert not any("multiplies two values" in str(w.message) for w in caught)
    np.testing.assert_allclose(np.asarray(gated.sum((1, 2, 3))), 1.0, atol=1e-10)


def test_a_gate_of_the_signals_shape_is_found_as_the_sigmoid_output():
    x = jax.random.normal(jax.random.key(4), (3, 6), jnp.float64)
    t = jnp.argmax(_gated(x), -1)
    rules = Composite(**LRP0, products=SignalTakeAll())
    relevance = attribution.lrp(_gated, x, t, rules=rules)
    np.testing.assert_allclose(np.asarray(relevance.sum(1)), 1.0, atol=1e-10)
    # By hand: the signal relu(x @ w1) takes R, then LRP-0 through x @ w1.
    w, v = _W, _V
    y = _gated(x)
    h = jax.nn.sigmoid(x @ w[0]) * jax.nn.relu(x @ w[1])
    r_h = h * v[:, t].T / y[jnp.arange(3), t][:, None]
    z = x @ w[1]
    expected = x * ((r_h / jnp.where(z == 0, 1.0, z)) @ w[1].T)
    np.testing.assert_allclose(np.asarray(relevance), np.asarray(expected), rtol=1e-9, atol=1e-12)


def test_products_must_be_a_product_rule():
    with pytest.raises(TypeError, match="products must be a rule with a product method"):
        Composite(products=Epsilon())
    assert not hasattr(Composite(), "product")


def test_the_docs_example_makes_the_preset_with_the_gate_rule():
    import pathlib
    import re

    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "attribution.md").read_text()
    section = doc[doc.index("**Gated units.**"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(block, "attribution.md", "exec"), scope)  # noqa: S102 - our own documentation
    assert scope["gated"].products == SignalTakeAll() and scope["gated"].first is not None


def test_the_gate_is_the_same_in_every_example():
    # o * tanh(c): an example whose tanh(c) lies in [0, 1] keeps its relevance whatever the
    # rest of the batch holds (a whole-batch choice by range moved it by 0.33 in a trial).
    k = jax.random.split(jax.random.key(0), 4)
    wg, ws, wo = (jax.random.normal(k[i], s, jnp.float64) for i, s in
                  enumerate([(5, 6), (5, 6), (6, 2)]))

    def cell(x):
        return (jax.nn.sigmoid(x @ wg) * jnp.tanh(x @ ws)) @ wo

    x = jax.random.normal(k[3], (64, 5), jnp.float64)
    c = np.asarray(jnp.tanh(x @ ws))
    i = int(np.flatnonzero(((c >= 0) & (c <= 1)).all(1))[0])
    assert (c < 0).any()
    rules = Composite(**LRP0, products=SignalTakeAll())
    np.testing.assert_allclose(attribution.lrp(cell, x, 0, rules=rules)[i],
                               attribution.lrp(cell, x[i:i + 1], 0, rules=rules)[0], atol=1e-12)
