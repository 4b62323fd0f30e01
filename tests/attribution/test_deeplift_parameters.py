"""DeepLIFT's rescale rule where an input and its reference meet (z == z_ref) takes the
model's own derivative there, with the activation's parameters (a leaky ReLU's slope, an
ELU's alpha), not those of jax.nn's defaults; and the five-argument activation rule that
gives it (the node's plain-gradient pullback)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution as A

# x -> h(x @ W1) @ W2: at x and b below, hidden unit 0 has z = z_ref = -3 (no difference, so its
# multiplier is the limit h'(-3)); unit 1 has z = 0, z_ref = -1.5.
W1 = np.array([[1.0, 0.5], [1.0, -0.5]], np.float32)
W2 = np.array([[1.0], [0.3]], np.float32)
X = np.array([[-1.0, -2.0]], np.float32)
B = np.array([[-2.0, -1.0]], np.float32)

ACTIVATIONS = {
    "leaky_relu(0.2)": lambda z: jax.nn.leaky_relu(z, 0.2),
    "where_leaky(0.2)": lambda z: jnp.where(z > 0, z, 0.2 * z),
    "elu(0.5)": lambda z: jax.nn.elu(z, 0.5),
    "celu(2.0)": lambda z: jax.nn.celu(z, 2.0),
    "gelu(erf)": lambda z: jax.nn.gelu(z, approximate=False),
    "squareplus(1.0)": lambda z: jax.nn.squareplus(z, 1.0),
}


def _net(h):
    return lambda v: h(v @ W1) @ W2


def _rescale_reference(h):
    """The rescale rule by hand: multipliers (h(z) - h(z_ref)) / (z - z_ref), h'(z) where the
    two meet, chained through the two linear layers in float64."""
    z, zr = (X @ W1)[0].astype(np.float64), (B @ W1)[0].astype(np.float64)
    slope = np.asarray(jax.vmap(jax.grad(h))(jnp.asarray(z, jnp.float32)), np.float64)
    dz = z - zr
    quotient = (np.asarray(h(jnp.asarray(z)), np.float64)
                - np.asarray(h(jnp.asarray(zr)), np.float64)) / np.where(dz == 0, 1, dz)
    multiplier = np.where(dz == 0, slope, quotient)
    return (X - B) * ((multiplier * W2[:, 0]) @ W1.T)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_rescale_takes_the_models_derivative_where_the_reference_meets_the_input(name):
    """Before: the derivative of jax.nn's function at its default parameters (leaky_relu(0.2)
    gave [0.10, 0.08] for [0.29, -0.11]; elu, celu, squareplus, gelu(erf) off by 0.4-66%)."""
    h = ACTIVATIONS[name]
    ours = A.deeplift(_net(h), jnp.asarray(X), 0, baseline=jnp.asarray(B))
    np.testing.assert_allclose(ours, _rescale_reference(h), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, module", [
    ("leaky_relu(0.2)", ("LeakyReLU", 0.2)), ("elu(0.5)", ("ELU", 0.5))])
def test_rescale_is_captums_where_the_reference_meets_the_input(name, module):
    torch = pytest.importorskip("torch")
    captum_attr = pytest.importorskip("captum.attr")
    l1, l2 = torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(2, 1, bias=False)
    l1.weight.data, l2.weight.data = torch.tensor(W1.T.copy()), torch.tensor(W2.T.copy())
    activation = getattr(torch.nn, module[0])(module[1])
    model = torch.nn.Sequential(l1, activation, l2).eval()
    ref = captum_attr.DeepLift(model).attribute(torch.tensor(X), target=0,
                                                baselines=torch.tensor(B))
    ours = A.deeplift(_net(ACTIVATIONS[name]), jnp.asarray(X), 0, baseline=jnp.asarray(B))
    np.testing.assert_allclose(ours, ref.detach().numpy(), rtol=1e-5, atol=1e-6)


@dataclasses.dataclass(frozen=True)
class _Derivative:
    """Passes ``g * h'(x)`` back, read from the node's pullback: the plain gradient."""

    def activation(self, op, x, y, g, pullback):
        return pullback(jnp.ones_like(g)) * g


@dataclasses.dataclass(frozen=True)
class _Halve:
    """The older four-argument form, called without a pullback."""

    def activation(self, op, x, y, g):
        return 0.5 * g


@pytest.mark.parametrize("name", ["leaky_relu(0.2)", "elu(0.5)", "celu(2.0)"])
def test_an_activation_rule_of_five_arguments_gets_the_nodes_own_pullback(name):
    f = _net(ACTIVATIONS[name])
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2)), jnp.float32)
    grad = jax.grad(lambda v: f(v).sum())(x)
    rewritten = jax.grad(lambda v: jp.rewrite_backward(f, _Derivative())(v).sum())(x)
    np.testing.assert_allclose(rewritten, grad, rtol=1e-6, atol=1e-7)
    halved = jax.grad(lambda v: jp.rewrite_backward(f, _Halve())(v).sum())(x)
    np.testing.assert_allclose(halved, 0.5 * (jnp.ones((4, 1)) @ W2.T) @ W1.T, rtol=1e-6)
