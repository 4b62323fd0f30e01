"""Equinox and Flax NNX models go through the same extraction (via jaxplain.as_function)."""

import equinox as eqx
import jax
import numpy as np
import pytest
from flax import nnx

import jaxplain as jp
from jaxplain import subnet
from tests.subnet import _nets


class EqxMLP(eqx.Module):
    l1: eqx.nn.Linear
    l2: eqx.nn.Linear
    head: eqx.nn.Linear

    def __init__(self, key):
        k = jax.random.split(key, 3)
        self.l1 = eqx.nn.Linear(64, 32, key=k[0])
        self.l2 = eqx.nn.Linear(32, 32, key=k[1])
        self.head = eqx.nn.Linear(32, 10, key=k[2])

    def __call__(self, x):
        return self.head(jax.nn.relu(self.l2(jax.nn.relu(self.l1(x.reshape(-1))))))


class NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(64, 32, rngs=rngs)
        self.head = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.l1(x.reshape(x.shape[0], -1))))


def assert_extracts_faithfully(f, sites, leaves_before, leaves_after):
    x, _ = _nets.region((2, 5))
    sub = subnet.extract(f, x, sites=sites, key=jax.random.key(0), l1=3e-3, steps=300,
                         finetune_steps=100)
    assert float(sub.region_agreement) == 1.0
    assert sub.sparsity > 0.3, sub.summary()
    np.testing.assert_allclose(float(subnet.fidelity(f, sub, x).agreement), 1.0)
    for a, b in zip(leaves_before, leaves_after()):
        np.testing.assert_array_equal(a, np.asarray(b))


# The untrained nets answer one class on the region, so the sub-network may be empty: these
# tests check the adapters (extraction runs and leaves the weights as they are), not the chain.
@pytest.mark.filterwarnings("ignore:f predicts class:UserWarning")
@pytest.mark.filterwarnings("ignore:the sub-network is empty:UserWarning")
def test_equinox_model():
    model = EqxMLP(jax.random.key(0))
    leaves = lambda: [np.asarray(v) for v in jax.tree.leaves(eqx.filter(model, eqx.is_array))]  # noqa: E731
    before = leaves()
    assert_extracts_faithfully(jp.as_function(model), ["relu", "relu_1"], before, leaves)


def test_nnx_model():
    model = NnxMLP(nnx.Rngs(0))
    leaves = lambda: [np.asarray(v) for v in jax.tree.leaves(nnx.state(model))]  # noqa: E731
    before = leaves()
    assert_extracts_faithfully(jp.as_function(model), ["l1"], before, leaves)
