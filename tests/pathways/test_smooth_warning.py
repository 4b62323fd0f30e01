"""The default pathway sites mask the piecewise-linear activations; when the network also
computes smooth nonlinearities (a squeeze-and-excitation gate, a LayerNorm's scale), the masked
network is not locally linear, and `select` says so."""

import warnings

import jax
import numpy as np
import pytest

from jaxplain import pathways

W1 = jax.random.normal(jax.random.key(0), (6, 8))
W2 = jax.random.normal(jax.random.key(1), (8, 8))
W3 = jax.random.normal(jax.random.key(2), (8, 3))
X = jax.random.normal(jax.random.key(3), (4, 6))


def relu_net(x):
    return jax.nn.relu(jax.nn.relu(x @ W1) @ W2) @ W3


def gated_net(x):  # a squeeze-and-excitation-like gate on the first ReLU layer
    h = jax.nn.relu(x @ W1)
    return jax.nn.relu((h * jax.nn.sigmoid(h @ W2)) @ W2) @ W3


def test_a_gated_network_warns_and_a_relu_network_does_not():
    with pytest.warns(UserWarning, match=r"not piecewise linear \(sigmoid, mul\)"):
        pathways.select(gated_net, X, 0, keep=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pathways.select(relu_net, X, 0, keep=0.5)


def test_the_warning_is_true_the_gated_pathway_gradient_is_not_affine():
    # Nearby, with the same masks, the pathway gradient of the ReLU network does not move; the
    # gated one's does.
    d = jax.random.normal(jax.random.key(4), X.shape)
    for f, affine in ((relu_net, True), (gated_net, False)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = pathways.pathway_gradient(f, X, 0, keep=0.5)
            moved = pathways.pathway_gradient(f, X + 1e-3 * d, 0, keep=0.5) - g
        assert (float(np.max(np.abs(np.asarray(moved)))) == 0.0) == affine
