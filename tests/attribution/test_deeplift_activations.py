"""DeepLIFT's rescale rule at every elementwise jax.nn activation, a warning at the raw
nonlinearities no rule sees, and pathways' default sites on a ReLU6 network."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A
from jaxplain import pathways

torch = pytest.importorskip("torch")
deep_lift = pytest.importorskip("captum.attr._core.deep_lift")
captum_attr = pytest.importorskip("captum.attr")

# jax.nn activation -> its torch module (None: torch has none)
ACTIVATIONS = {
    "relu": "ReLU", "relu6": "ReLU6", "sigmoid": "Sigmoid", "silu": "SiLU", "softplus": "Softplus",
    "elu": "ELU", "celu": "CELU", "selu": "SELU", "leaky_relu": "LeakyReLU",
    "hard_tanh": "Hardtanh", "gelu": None, "mish": "Mish", "log_sigmoid": "LogSigmoid",
    "tanh": "Tanh", "hard_sigmoid": "Hardsigmoid", "hard_silu": "Hardswish",
    "soft_sign": "Softsign", "squareplus": None, "sparse_plus": None,
}


def _weights():
    rng = np.random.default_rng(0)
    return rng.normal(size=(6, 16)), rng.normal(size=(16, 3))


def _mlp(name):
    """A 6-16-3 MLP with the activation `name`, and inputs of scale 2 (saturating relu6, the
    hard_* functions, and the pieces of the piecewise ones)."""
    w1, w2 = (jnp.asarray(w) for w in _weights())
    act = getattr(jax.nn, name)
    f = lambda z: act(z @ w1) @ w2  # noqa: E731
    x = 2 * np.random.default_rng(1).normal(size=(4, 6))
    return f, jnp.asarray(x)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_deeplift_sums_to_the_gap_at_every_activation(name):
    """Summation-to-delta to 1e-6 in float64 (the plain gradient at relu6, hard_silu, selu, ...
    missed the gap by 1.5-8.9 on this MLP), for DeepLIFT and DeepLIFT-SHAP."""
    with jax.enable_x64(True):
        f, x = _mlp(name)
        b = 0.5 * jnp.ones_like(x)
        gap = f(x)[:, 0] - f(b)[:, 0]
        a = A.deeplift(f, x, 0, baseline=b)
        np.testing.assert_allclose(a.sum(1), gap, rtol=0, atol=1e-6)
        refs = jnp.asarray(np.random.default_rng(2).normal(size=(5, 6)))
        a = A.deeplift_shap(f, x, 0, baselines=refs)
        np.testing.assert_allclose(a.sum(1), f(x)[:, 0] - f(refs)[:, 0].mean(), rtol=0, atol=1e-6)


def _torch_mlp(module):
    w1, w2 = _weights()
    l1, l2 = torch.nn.Linear(6, 16, bias=False), torch.nn.Linear(16, 3, bias=False)
    l1.weight.data, l2.weight.data = torch.tensor(w1.T.copy()), torch.tensor(w2.T.copy())
    return torch.nn.Sequential(l1, getattr(torch.nn, module)(), l2).double().eval()


@pytest.mark.parametrize("name", [n for n, m in ACTIVATIONS.items() if m is not None])
def test_deeplift_is_captums_nonlinear_rule(name, monkeypatch):
    """Captum's DeepLift with its rule for non-linearities at the twin's activation module (as
    Captum 0.9 applies it to ReLU, ELU, LeakyReLU, Sigmoid, Tanh and Softplus; registered here
    for the others, which Captum leaves to the plain gradient)."""
    module = getattr(torch.nn, ACTIVATIONS[name])
    monkeypatch.setitem(deep_lift.SUPPORTED_NON_LINEAR, module, deep_lift.nonlinear)
    with jax.enable_x64(True):
        f, x = _mlp(name)
        b = np.random.default_rng(3).normal(size=x.shape)
        model = _torch_mlp(ACTIVATIONS[name])
        np.testing.assert_allclose(model(torch.tensor(np.asarray(x))).detach().numpy(), f(x),
                                   atol=1e-12)
        t = np.arange(4) % 3
        ref = captum_attr.DeepLift(model).attribute(
            torch.tensor(np.asarray(x)), target=torch.tensor(t), baselines=torch.tensor(b))
        ours = A.deeplift(f, x, jnp.asarray(t), baseline=jnp.asarray(b))
        np.testing.assert_allclose(ours, ref.detach().numpy(), rtol=1e-9, atol=1e-9)


W = jnp.asarray(np.random.default_rng(0).normal(size=(5, 4)), jnp.float32)
X = jnp.asarray(np.random.default_rng(1).normal(size=(3, 5)), jnp.float32)


@pytest.mark.parametrize("head, op", [
    (lambda h: h ** 2, "integer_pow"), (jnp.square, "square"), (jnp.exp, "exp"),
    (lambda h: jnp.log1p(h ** 2), "log1p"), (jnp.sin, "sin"), (jnp.abs, "abs"),
    (lambda h: jnp.clip(h, -1.0, 1.0), "max"), (lambda h: jnp.where(h > 0, h, 0.1 * jnp.sin(h)), "select_n"),
    (lambda h: 1.0 / (1.0 + h ** 2), "div"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_deeplift_warns_at_nonlinearities_no_rule_sees(head, op):
    """Raw elementwise nonlinearities (x ** 2 misses the gap by 3.8-11.5 here, exp by 18.1)
    get a UserWarning naming the primitive, from deeplift; jax.nn activations do not."""
    f = lambda z: head(z @ W).sum(1, keepdims=True)  # noqa: E731
    with pytest.warns(UserWarning, match=f"deeplift: .*'{op}'.*summation-to-delta fails"):
        A.deeplift(f, X, 0)


@pytest.mark.parametrize("head", [jax.nn.relu, jax.nn.relu6, jax.nn.hard_silu, jax.nn.mish,
                                  lambda h: h / 2.0 + 1.0, lambda h: h * h])
def test_deeplift_does_not_warn_at_rescaled_or_linear_ops(head):
    """No nonlinearity warning at jax.nn activations (one node each, rescaled), at linear ops,
    or at a product (warned about apart), or at a LayerNorm's variance and scale."""
    def f(z):
        h = z @ W
        h = (h - h.mean(-1, keepdims=True)) * jax.lax.rsqrt(h.var(-1, keepdims=True) + 1e-5)
        return head(h).sum(1, keepdims=True)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        A.deeplift(f, X, 0)
    assert not [w for w in caught if "elementwise nonlinearities" in str(w.message)]


def _relu6_net():
    """A bias-free ReLU6 CNN with an average pool (MobileNet's activation)."""
    rng = np.random.default_rng(0)
    k1 = jnp.asarray(rng.normal(0, 0.7, (3, 3, 1, 4)))
    k2 = jnp.asarray(rng.normal(0, 0.4, (3, 3, 4, 6)))
    w = jnp.asarray(rng.normal(0, 0.4, (6, 3)))

    def f(x):
        h = jax.nn.relu6(jax.lax.conv_general_dilated(x, k1, (1, 1), "SAME",
                                                      dimension_numbers=("NHWC", "HWIO", "NHWC")))
        h = jax.nn.relu6(jax.lax.conv_general_dilated(h, k2, (1, 1), "SAME",
                                                      dimension_numbers=("NHWC", "HWIO", "NHWC")))
        return h.mean(axis=(1, 2)) @ w

    x = jnp.asarray(3 * rng.normal(size=(2, 6, 6, 1)))
    return f, x


def test_pathways_default_to_relu6_sites_and_are_locally_linear():
    """pathways picks a ReLU6 net's activations by default (it raised "no post-ReLU activation
    sites"), and the masked network is locally linear: a finite difference along a random
    direction equals the pathway gradient's directional derivative."""
    with jax.enable_x64(True):
        f, x = _relu6_net()
        masks = pathways.select(f, x, 0, keep=0.3)
        assert sorted(masks) == ["relu6", "relu6_1"]
        g = pathways.pathway_gradient(f, x, 0, keep=0.3)
        d = jnp.asarray(np.random.default_rng(4).normal(size=x.shape))
        d = d / jnp.linalg.norm(d.reshape(2, -1), axis=1)[:, None, None, None]
        masked = lambda z: pathways.apply(f, masks)(z)[:, 0]  # noqa: E731
        step = 1e-4
        fd = (masked(x + step * d) - masked(x - step * d)) / (2 * step)
        np.testing.assert_allclose(fd, (g * d).sum((1, 2, 3)), rtol=1e-7, atol=1e-9)
        assert np.abs(np.asarray((g * d).sum((1, 2, 3)))).min() > 1e-3


def test_deeplift_shap_warns_at_nonlinearities_no_rule_sees():
    f = lambda z: jnp.exp(z @ W).sum(1, keepdims=True)  # noqa: E731
    with pytest.warns(UserWarning, match="deeplift_shap: .*'exp'"):
        A.deeplift_shap(f, X, 0, baselines=jnp.zeros((2, 5)))


def test_the_warning_names_a_jax_nn_function_without_a_rule_as_such():
    """jax.nn.sparse_sigmoid is a jax.nn function (inlined to clip and mul): the warning does
    not call it "no jax.nn activation", but one jaxplain has no rule for."""
    f = lambda z: jax.nn.sparse_sigmoid(z @ W).sum(1, keepdims=True)  # noqa: E731
    with pytest.warns(UserWarning, match="none of the activations jaxplain has rules for"):
        A.deeplift(f, X, 0)
