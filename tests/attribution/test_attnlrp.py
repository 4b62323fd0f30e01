"""AttnLRP (Achtibat et al. 2024): agreement with LXT's explicit rules on a Flax encoder block,
LRP-ε where a network has no transformer places, and conservation where it has no softmax."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain.attribution import attn_lrp, gradient_x_input, lrp
from jaxplain.lrp import Epsilon

N, TOKENS, D, HEADS = 3, 5, 8, 2
X = jax.random.normal(jax.random.key(0), (N, TOKENS, D))
TARGET = jnp.array([0, 2, 1])


class GatedEncoder(nn.Module):
    """A pre-LN encoder block with biases: multi-head attention, a GELU-gated MLP, a final
    LayerNorm, mean pooling and a head."""

    @nn.compact
    def __call__(self, x):
        h = x + nn.MultiHeadDotProductAttention(num_heads=HEADS, name="attn")(nn.LayerNorm(name="ln_a")(x))
        m = nn.LayerNorm(name="ln_m")(h)
        gated = nn.gelu(nn.Dense(2 * D, name="up")(m)) * nn.Dense(2 * D, name="gate")(m)
        h = h + nn.Dense(D, name="down")(gated)
        return nn.Dense(3, name="head")(nn.LayerNorm(name="ln_o")(h).mean(axis=1))


def lxt_relevance(params, x, target, eps=1e-12):
    """The input relevance of a torch twin built from ``lxt.explicit.functional`` (float64),
    every stabiliser `eps` (LXT's defaults, 1e-6 and 1e-8 added without sign, move relevance
    near zero-valued outputs by up to 1e-3 of the largest)."""
    torch = pytest.importorskip("torch")
    lf = pytest.importorskip("lxt.explicit.functional")
    from lxt.explicit.rules import identity

    p = jax.tree_util.tree_map(lambda a: torch.tensor(np.asarray(a), dtype=torch.float64), params)

    def dense(v, layer, scale=1.0):
        kernel, bias = layer["kernel"], layer["bias"]
        return lf.linear_epsilon(v, kernel.reshape(kernel.shape[0], -1).T * scale,
                                 bias.reshape(-1) * scale, eps)

    def norm(v, layer):
        return lf.layer_norm_grad_fn.apply(v, layer["scale"], layer["bias"], 1e-6, eps)

    def heads(v):
        return v.reshape(N, TOKENS, HEADS, -1).transpose(1, 2)

    xt = torch.tensor(np.asarray(x), dtype=torch.float64, requires_grad=True)
    a, att = norm(xt, p["ln_a"]), p["attn"]
    q = heads(dense(a, att["query"], 1 / np.sqrt(D // HEADS)))  # Flax scales the query
    k, v = heads(dense(a, att["key"])), heads(dense(a, att["value"]))
    weights = lf.softmax(lf.matmul(q, k.transpose(-1, -2), epsilon=eps), -1)
    mixed = lf.matmul(weights, v, epsilon=eps).transpose(1, 2).reshape(N, TOKENS, D)
    out = att["out"]
    h = lf.add2(xt, lf.linear_epsilon(mixed, out["kernel"].reshape(D, D).T, out["bias"], eps), epsilon=eps)
    m = norm(h, p["ln_m"])
    up = identity(lambda t: torch.nn.functional.gelu(t, approximate="tanh"), dense(m, p["up"]))
    h = lf.add2(h, dense(lf.mul2(up, dense(m, p["gate"])), p["down"]), epsilon=eps)
    logits = dense(lf.mean(norm(h, p["ln_o"]), 1, False, epsilon=eps), p["head"])
    chosen = logits[torch.arange(N), torch.tensor(np.array(target))]
    chosen.backward(chosen.detach())  # the output relevance is the target logit
    return xt.grad.numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_lxt_on_a_flax_encoder_block(seed):
    model = GatedEncoder()
    variables = model.init(jax.random.key(seed), X)
    f = jp.as_function(model, variables)
    ours = np.asarray(attn_lrp(f, X, TARGET, epsilon=1e-9))
    theirs = lxt_relevance(variables["params"], X, TARGET)
    scale = np.abs(theirs).max(axis=(1, 2), keepdims=True)
    np.testing.assert_array_less(np.abs(ours - theirs) / scale, 1e-5)  # a few 1e-7 measured
    # and it is not gradient x input, which LayerNorms and products make different
    plain = np.asarray(gradient_x_input(f, X, TARGET))
    assert (np.abs(plain - theirs) / scale).max() > 0.05


_W1 = jax.random.normal(jax.random.key(1), (D, 12)) / np.sqrt(D)
_W2 = jax.random.normal(jax.random.key(2), (12, 4)) / np.sqrt(12)


def mlp(x):
    h = jnp.tanh(x.reshape(x.shape[0], -1)[:, :D] @ _W1 + 0.1)
    return jax.nn.relu(h) @ _W2 - 0.2


def test_without_transformer_places_it_is_lrp_epsilon():
    x = X[:, 0]
    ours = attn_lrp(mlp, x, TARGET)
    reference = lrp(mlp, x, TARGET, rules=Epsilon(1e-6), scale_by_logit=True)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-6)


class BiasFreeBlock(nn.Module):
    """LayerNorms, a gated MLP and a residual stream, without biases or softmax."""

    @nn.compact
    def __call__(self, x):
        m = nn.LayerNorm(use_bias=False)(x)
        up = nn.Dense(2 * D, use_bias=False)
        gated = nn.gelu(up(m)) * nn.Dense(2 * D, use_bias=False)(m)
        h = x + nn.Dense(D, use_bias=False)(gated)
        return nn.Dense(3, use_bias=False)(nn.RMSNorm()(h).mean(axis=1))


@pytest.mark.parametrize("seed", [0, 1])
def test_relevance_is_conserved_without_biases_and_softmax(seed):
    model = BiasFreeBlock()
    f = jp.as_function(model, model.init(jax.random.key(seed), X))
    logit = jnp.take_along_axis(f(X), TARGET[:, None], axis=1)[:, 0]
    total = attn_lrp(f, X, TARGET).sum(axis=(1, 2))
    np.testing.assert_allclose(total, logit, rtol=1e-4, atol=1e-5)


def test_rewrite_backward_finds_products_but_not_the_layernorm_scale():
    seen = []

    class Record:
        def product(self, op, a, b, y, g, pullback):
            seen.append((op, a.shape, b.shape))

    model = GatedEncoder()
    f = jp.as_function(model, model.init(jax.random.key(0), X))
    jax.grad(lambda z: jp.rewrite_backward(f, Record())(z).sum())(X)
    assert sorted(op for op, _, _ in seen) == ["matmul", "matmul", "mul"]
    assert (N, TOKENS, 2 * D) in {a for _, a, _ in seen}  # the gate, not a LayerNorm
