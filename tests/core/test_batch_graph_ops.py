"""The batch axis through message passing (gather and scatter at constant indices), and the ops
that move values along the batch axis (:func:`jaxplain.core.mixes_batch`)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution, pathways, rules
from jaxplain.core import BatchMixingWarning, mixes_batch

N, F, H = 6, 4, 8
SRC = np.array([0, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 0])
DST = np.array([1, 2, 3, 4, 5, 0, 0, 1, 2, 3, 4, 5])
_K = jax.random.split(jax.random.key(0), 3)
W1, W2 = jax.random.normal(_K[0], (F, H)), jax.random.normal(_K[1], (H, 3))
X = jax.random.normal(_K[2], (4, N, F))


def _agg(h):  # (nodes, batch, features): the sum over each node's neighbours
    return jax.ops.segment_sum(h[SRC], DST, num_segments=N)


def node_major(x):  # the ReLU sees (nodes, batch, hidden)
    return jax.nn.relu(_agg(jnp.swapaxes(x, 0, 1)) @ W1).sum(0) @ W2


def batch_major(x):  # the same function, the ReLU batch first
    return jax.nn.relu(jnp.swapaxes(_agg(jnp.swapaxes(x, 0, 1)), 0, 1) @ W1).sum(1) @ W2


def lost(x):  # the batch axis goes through a loop the kernel does not follow
    h = jnp.swapaxes(x, 0, 1)
    h = jax.lax.while_loop(lambda c: c[0] < 2, lambda c: (c[0] + 1, c[1] * 0.5), (0, h))[1]
    return jax.nn.relu(h @ W1).sum(0) @ W2


def test_node_major_sites_are_batch_first():
    site = {s.name: s for s in jp.sites(node_major, X)}["relu"]
    assert site.shape == (4, N, H)  # was (6, 4, 8): nodes first
    _, got = jp.capture(node_major, "relu")(X)
    _, want = jp.capture(batch_major, "relu")(X)
    np.testing.assert_allclose(got["relu"], want["relu"], rtol=1e-6)


def test_node_major_deeplift_sums_to_the_gap():
    gap = node_major(X)[:, 0] - node_major(jnp.zeros_like(X))[:, 0]
    a = attribution.deeplift(node_major, X, 0)
    np.testing.assert_allclose(a.sum((1, 2)), gap, rtol=1e-4, atol=1e-4)  # was off by up to 32
    np.testing.assert_allclose(a, attribution.deeplift(batch_major, X, 0), atol=1e-5)


def test_lost_batch_axis_is_refused_where_batch_first_is_assumed():
    with pytest.raises(ValueError, match="batch axis of that value is lost"):
        attribution.deeplift(lost, X, 0)
    with pytest.raises(ValueError, match="first axis is not the batch of 4"):
        pathways.select(lost, X, 0, keep=0.3)
    with pytest.raises(ValueError, match="first axis is not the batch of 4"):
        rules.activations(lost, X, "relu")


def test_node_major_pathways_and_rules_are_per_example():
    t = jnp.array([0, 1, 2, 0])
    masks = pathways.select(node_major, X, t, keep=0.3)
    assert pathways.kept_fraction(masks).shape == (4,)  # was one per node
    alone = pathways.pathway_gradient(node_major, X[:1], t[:1], keep=0.3)
    in_batch = pathways.pathway_gradient(node_major, X, t, keep=0.3)[:1]
    np.testing.assert_allclose(in_batch, alone, atol=1e-5)  # was 2.76 apart
    assert rules.activations(node_major, X, "relu", conv_quantile=0.5)["relu"].items.shape[0] == 4


_W = jnp.ones((3, 2))
MIXING = {
    "batch mean": lambda x: (x - x.mean(0)) @ _W,
    "cumsum": lambda x: jnp.cumsum(x, 0) @ _W,
    "sort": lambda x: jnp.sort(x, 0) @ _W,
    "flip": lambda x: x[::-1] @ _W,
    "roll": lambda x: jnp.roll(x, 1, 0) @ _W,
    "gather rows": lambda x: x[np.array([1, 2, 3, 0])] @ _W,
    "segment_sum": lambda x: jax.ops.segment_sum(x, np.array([0, 0, 1, 1]), num_segments=4) @ _W,
    "x + x[0]": lambda x: (x + x[0]) @ _W,
    "pad": lambda x: jnp.pad(x, ((1, 0), (0, 0)))[:4] @ _W,
}
PER_EXAMPLE = {
    "embedding lookup": lambda x: jnp.arange(30.0).reshape(10, 3)[
        jnp.clip(x[:, 0].astype(jnp.int32), 0, 9)] @ _W,
    "gather features": lambda x: x[:, np.array([2, 0, 1, 1])] @ jnp.ones((4, 2)),
    "sort features": lambda x: jnp.sort(x, 1) @ _W,
    "cumsum features": lambda x: jnp.cumsum(x, 1) @ _W,
    "scatter features": lambda x: x.at[:, np.array([0, 0])].add(x[:, 1:]) @ _W,
    "take_along_axis": lambda x: jnp.take_along_axis(x, np.array([[1], [2], [0], [0]]), 1) @ _W[:1],
}


@pytest.mark.parametrize("name", sorted(MIXING))
def test_ops_along_the_batch_mix_it(name):
    x = jax.random.normal(jax.random.key(1), (4, 3))
    jac = jax.jacobian(MIXING[name])(x) * (1 - jnp.eye(4))[:, None, :, None]
    assert float(jnp.abs(jac).sum()) > 0  # row i truly depends on another row
    assert mixes_batch(MIXING[name], x)  # only "batch mean" was True before


@pytest.mark.parametrize("name", sorted(PER_EXAMPLE))
def test_ops_within_an_example_do_not(name):
    x = jax.random.normal(jax.random.key(1), (4, 3))
    assert not mixes_batch(PER_EXAMPLE[name], x)


def test_message_passing_within_examples_does_not_mix():
    assert not mixes_batch(node_major, X) and not mixes_batch(batch_major, X)


def test_node_classification_warns():
    def nodes(x):  # one graph: (nodes, features) -> (nodes, classes)
        return jax.nn.relu(jax.ops.segment_sum(x[SRC], DST, num_segments=N) @ W1) @ W2

    x = X[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attribution.gradient(nodes, x, 0)
    mixing = [str(w.message) for w in caught if issubclass(w.category, BatchMixingWarning)]
    assert mixing and "node classification" in mixing[0] and "jax.vmap(g)" in mixing[0]


def test_a_product_of_examples_with_examples_mixes_the_batch():
    x = jax.random.normal(jax.random.key(7), (4, 3))
    gram = lambda z: (z @ z.T)[:, :2]  # noqa: E731 - row i reads every example
    jac = jax.jacobian(lambda z: gram(z)[0])(x)
    assert np.abs(np.asarray(jac[:, 1:])).max() > 0 and mixes_batch(gram, x)
    per_example = lambda z: jnp.einsum("bqd,bkd->bqk", z[:, None], z[:, None])[:, 0]  # noqa: E731
    assert not mixes_batch(per_example, x)
