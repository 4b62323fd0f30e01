"""LRP where only part of the affine ops after a dense or conv layer act per output channel.

The per-channel start of the chain (the layer's own bias, a BatchNorm or LayerScale scale) folds
into the layer; what follows (a positional table, a padding mask) is a separate op that
relevance passes by its plain gradient, as after a ``torch.nn.Linear`` or ``Conv1d`` in Zennit.
References: float64 NumPy transcriptions of the epsilon rule with the layer's bias in its
denominator, and Zennit on torch twins.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxplain as jp
from jaxplain import lrp as L
from jaxplain.attribution import lrp

EPS = 0.5
N, T, D, H, C = 2, 4, 3, 5, 3
TARGET = np.array([0, 1])


def _weights(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s) for s in shapes]


def _share(z, r, eps=EPS):
    """Epsilon's ``r / (z + eps sign(z))`` (sign(0) = 1, as Zennit)."""
    return r / (z + eps * np.where(z >= 0, 1.0, -1.0))


def _head(a, w):
    """Epsilon at a bias-free head ``a @ w`` (a: (n, k)), started from the one-hot target."""
    return a * (_share(a @ w, np.eye(C)[TARGET]) @ w.T)


def _ours(f, x, rules=L.Epsilon(EPS)):
    with jax.enable_x64(True):
        return np.asarray(lrp(f, jnp.asarray(x), jnp.asarray(TARGET), rules=rules))


@pytest.mark.parametrize("scale", [False, True], ids=["bias", "bias+layerscale"])
def test_positional_table_after_a_dense_bias(scale):
    # relu((x @ w1 + b1) [* g] + P): the layer is Linear(w1 g, b1 g); the table passes
    w1, b1, p, w2, g, x = _weights(0, (D, H), (H,), (T, H), (T * H, C), (H,), (N, T, D))
    b1 *= 2.0
    g = g if scale else np.ones(H)

    def f(v):
        z = v @ w1 + b1
        return jax.nn.relu((z * g if scale else z) + p).reshape(N, -1) @ w2

    z = (x @ w1 + b1) * g
    ra = _head(np.maximum(z + p, 0).reshape(N, -1), w2).reshape(N, T, H)
    ref = x * (_share(z, ra) @ (w1 * g).T)
    np.testing.assert_allclose(_ours(f, x), ref, atol=1e-10 * np.abs(ref).max())


def test_dense_general_with_two_output_axes():
    # Flax DenseGeneral(features=(2, 3)): the bias (2, 3) is in the layer's denominator
    class Net(nn.Module):
        @nn.compact
        def __call__(self, v):
            h = nn.DenseGeneral((2, 3), param_dtype=jnp.float64, name="proj",
                                bias_init=nn.initializers.normal(1.0))(v)
            return nn.Dense(C, use_bias=False, param_dtype=jnp.float64, name="head")(
                nn.relu(h).reshape(len(v), 6))

    x, = _weights(1, (N, 5))
    with jax.enable_x64(True):
        variables = Net().init(jax.random.key(1), jnp.asarray(x))
        f = jp.as_function(Net(), variables)
    params = jax.tree.map(np.asarray, variables["params"])
    k, b, wh = params["proj"]["kernel"], params["proj"]["bias"], params["head"]["kernel"]
    z = np.einsum("nd,dhk->nhk", x, k) + b
    ra = _head(np.maximum(z, 0).reshape(N, 6), wh).reshape(N, 2, 3)
    ref = x * np.einsum("nhk,dhk->nd", _share(z, ra), k)
    np.testing.assert_allclose(_ours(f, x), ref, atol=1e-10 * np.abs(ref).max())


def test_per_head_projection_with_a_shared_head_axis():
    # einsum("nhd,hdk->nhk") + b[h, k]: the head axis is a batch axis of the dot_general, its
    # output (h, n, k) transposed to (n, h, k); the bias is per (head, unit)
    w, b, wh, x = _weights(2, (2, D, 4), (2, 4), (8, C), (N, 2, D))
    b *= 2.0

    def f(v):
        return jax.nn.relu(jnp.einsum("nhd,hdk->nhk", v, w) + b).reshape(N, 8) @ wh

    z = np.einsum("nhd,hdk->nhk", x, w) + b
    ra = _head(np.maximum(z, 0).reshape(N, 8), wh).reshape(N, 2, 4)
    ref = x * np.einsum("nhk,hdk->nhd", _share(z, ra), w)
    np.testing.assert_allclose(_ours(f, x), ref, atol=1e-10 * np.abs(ref).max())


def test_lrp0_conserves_with_a_scale_then_a_table():
    # bias-free x @ w * gamma + P: gamma folds into the weight, the table passes, so LRP-0's
    # relevance sums to the logit (the old code multiplied relevance by gamma)
    w, p, w2, x = _weights(3, (D, H), (T, H), (T * H, C), (N, T, D))
    gamma = np.array([0.5, 2.0, 3.0, 0.25, 1.5])

    def f(v):
        return jax.nn.relu(v @ w * gamma + p).reshape(N, -1) @ w2

    lrp0 = L.Composite(default=L.Epsilon(0.0), stabilizer=0.0)
    with jax.enable_x64(True):
        r = lrp(f, jnp.asarray(x), jnp.asarray(TARGET), rules=lrp0, scale_by_logit=True)
        logit = np.asarray(f(jnp.asarray(x)))[np.arange(N), TARGET]
    np.testing.assert_allclose(np.asarray(r).sum((1, 2)), logit, rtol=1e-10)


def _conv1d(v, k):
    return lax.conv_general_dilated(v, k, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))


_MASKS = {"ones": np.ones((N, 6, 1)),
          "padding": np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], float)[:, :, None]}


@pytest.mark.parametrize("mask", list(_MASKS), ids=list(_MASKS))
def test_padding_mask_after_a_conv_bias(mask):
    # (conv1d(x) + b) * mask: the layer is Conv1d(k, b); the mask is an elementwise product
    # that relevance passes by its gradient (relevance * mask), as a mask multiply in torch
    k, b, wd, x = _weights(4, (3, 2, 4), (4,), (24, C), (N, 6, 2))
    b *= 2.0
    m = _MASKS[mask]

    def f(v):
        return jax.nn.relu((_conv1d(v, k) + b) * m).reshape(N, -1) @ wd

    with jax.enable_x64(True):
        conv = lambda v: _conv1d(v, k)  # noqa: E731
        z = np.asarray(conv(jnp.asarray(x))) + b
        ra = _head(np.maximum(z * m, 0).reshape(N, -1), wd).reshape(N, 6, 4)
        ref = x * np.asarray(jax.vjp(conv, jnp.asarray(x))[1](jnp.asarray(_share(z, ra * m)))[0])
    np.testing.assert_allclose(_ours(f, x), ref, atol=1e-10 * np.abs(ref).max())


def test_stacked_coordinate_channel_keeps_the_first_rule():
    # conv(jnp.stack([x, coords], -1)) reads the input as the concatenate spelling does, so
    # EpsilonPlusFlat's Flat goes to it in both
    k, w = _weights(5, (3, 3, 2, 4), (4, C))
    x = np.random.default_rng(6).uniform(size=(N, 6, 6))
    coords = np.broadcast_to(np.linspace(0, 1, 6)[None, :, None], (N, 6, 6))

    def conv(h):
        return jax.nn.relu(lax.conv_general_dilated(
            h, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))).mean((1, 2)) @ w

    stacked = lambda v: conv(jnp.stack([v, coords], -1))  # noqa: E731
    joined = lambda v: conv(jnp.concatenate([v[..., None], coords[..., None]], -1))  # noqa: E731
    rules = L.EpsilonPlusFlat()
    np.testing.assert_allclose(_ours(stacked, x, rules), _ours(joined, x, rules), atol=1e-12)


@pytest.fixture(scope="module")
def zennit():
    pytest.importorskip("torch")
    from tests.attribution import _zennit

    if _zennit.load() is None:
        pytest.skip("zennit is not installed")
    return _zennit


def _zennit_relevance(zennit, modules, x):
    import torch

    model = torch.nn.Sequential(*modules).double().eval()
    return zennit.relevance(model, x, TARGET, zennit.everywhere(L.Epsilon(EPS)))


def _plain(fn):
    """A torch module computing ``fn``: a plain op (a table add, a mask multiply, a layout),
    to which Zennit gives no rule."""
    import torch

    class Plain(torch.nn.Module):
        def forward(self, v):
            return fn(v)

    return Plain()


def test_positional_table_agrees_with_zennit(zennit):
    import torch

    torch.manual_seed(0)
    lin1, lin2 = torch.nn.Linear(D, H).double(), torch.nn.Linear(T * H, C, bias=False).double()
    with torch.no_grad():
        lin1.bias.mul_(4.0)
    p, x = _weights(7, (T, H), (N, T, D))
    w1, b1 = lin1.weight.detach().numpy().T, lin1.bias.detach().numpy()
    w2 = lin2.weight.detach().numpy().T

    def f(v):
        return jax.nn.relu(v @ w1 + b1 + p).reshape(N, -1) @ w2

    table = _plain(lambda v: v + torch.as_tensor(p))
    ref = _zennit_relevance(zennit, [lin1, table, torch.nn.ReLU(), torch.nn.Flatten(), lin2], x)
    np.testing.assert_allclose(_ours(f, x), ref, atol=1e-10 * np.abs(ref).max())


def test_padding_mask_agrees_with_zennit(zennit):
    import torch

    torch.manual_seed(1)
    conv, head = torch.nn.Conv1d(2, 4, 3, padding=1).double(), torch.nn.Linear(24, C, bias=False)
    with torch.no_grad():
        conv.bias.mul_(4.0)
    x, = _weights(8, (N, 6, 2))
    m = _MASKS["padding"]
    mask = m.transpose(0, 2, 1)  # NCW
    k = conv.weight.detach().numpy().transpose(2, 1, 0)  # (out, in, w) -> WIO
    b, wd = conv.bias.detach().numpy(), head.double().weight.detach().numpy().T

    def f(v):
        return jax.nn.relu((_conv1d(v, k) + b) * m).reshape(N, -1) @ wd

    ref = _zennit_relevance(zennit, [
        _plain(lambda v: v.permute(0, 2, 1)), conv, _plain(lambda v: v * torch.as_tensor(mask)),
        torch.nn.ReLU(), _plain(lambda v: v.permute(0, 2, 1).reshape(N, -1)), head], x)
    np.testing.assert_allclose(_ours(f, x), ref, atol=1e-10 * np.abs(ref).max())
