"""Conservative propagation (Ali et al. 2022) on transformers: attention weights and LayerNorm
scales held constant, attributions summing to the logit."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain.attribution import conservative_propagation, gradient_x_input

D, TOKENS = 6, 5
WS = jax.random.normal(jax.random.key(0), (8, D, D)) / np.sqrt(D)
HEAD = jax.random.normal(jax.random.key(1), (D, 3))


def plain_transformer(detach: bool):
    """Two bias-free pre-LN blocks (one attention head, a ReLU MLP), mean pooling and a head;
    with ``detach`` the attention weights and LayerNorm scales are stop_gradient'ed by hand."""
    hold = jax.lax.stop_gradient if detach else (lambda v: v)

    def layer_norm(h):
        centred = h - h.mean(axis=-1, keepdims=True)
        return centred * hold(jax.lax.rsqrt((centred ** 2).mean(axis=-1, keepdims=True) + 1e-5))

    def f(x):  # (batch, tokens, D) -> (batch, 3)
        h = x
        for wq, wk, wv, wm in WS.reshape(2, 4, D, D):
            a = layer_norm(h)
            p = hold(jax.nn.softmax((a @ wq) @ jnp.swapaxes(a @ wk, 1, 2) / np.sqrt(D)))
            h = h + p @ (a @ wv)
            h = h + jax.nn.relu(layer_norm(h) @ wm) @ wm.T
        return h.mean(axis=1) @ HEAD

    return f


X = jax.random.normal(jax.random.key(2), (4, TOKENS, D))
TARGET = jnp.array([0, 1, 2, 0])


def test_equals_gradient_x_input_of_the_hand_detached_network():
    f = plain_transformer(detach=False)
    names = [s.name for s in jp.sites(f, X)]
    assert "softmax" in names and "softmax_1" in names
    ours = conservative_propagation(f, X, TARGET)
    reference = gradient_x_input(plain_transformer(detach=True), X, TARGET)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


def test_attributions_sum_to_the_logit_where_gradient_x_input_does_not():
    f = plain_transformer(detach=False)
    logit = jnp.take_along_axis(f(X), TARGET[:, None], axis=1)[:, 0]
    total = conservative_propagation(f, X, TARGET).sum(axis=(1, 2))
    np.testing.assert_allclose(total, logit, rtol=1e-4, atol=1e-5)
    plain = gradient_x_input(f, X, TARGET).sum(axis=(1, 2))
    assert np.abs(plain - logit).max() > 0.05 * np.abs(logit).max()


class FlaxTransformer(nn.Module):
    """A bias-free Flax encoder block: LayerNorm, multi-head attention, ReLU MLP."""

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(8, use_bias=False, name="embed")(x)
        a = nn.LayerNorm(use_bias=False, name="ln_a")(h)
        h = h + nn.MultiHeadDotProductAttention(num_heads=2, use_bias=False, name="attn")(a)
        m = nn.LayerNorm(use_bias=False, name="ln_m")(h)
        h = h + nn.Dense(8, use_bias=False, name="down")(
            nn.relu(nn.Dense(16, use_bias=False, name="up")(m)))
        return nn.Dense(3, use_bias=False, name="head")(h.mean(axis=1))


@pytest.mark.parametrize("seed", [0, 1])
def test_a_flax_encoder_block_conserves_the_logit(seed):
    model = FlaxTransformer()
    f = jp.as_function(model, model.init(jax.random.key(seed), X))
    sites = {s.name: s for s in jp.sites(f, X)}
    assert sites["attn/softmax"].shape == (4, 2, TOKENS, TOKENS)
    assert not any(name.startswith("ln_") and name.endswith("relu") for name in sites)  # var clamps
    logit = jnp.take_along_axis(f(X), TARGET[:, None], axis=1)[:, 0]
    total = conservative_propagation(f, X, TARGET).sum(axis=(1, 2))
    np.testing.assert_allclose(total, logit, rtol=1e-4, atol=1e-5)


def test_without_attention_or_normalisation_it_is_gradient_x_input():
    w1, w2 = WS[0], HEAD
    f = lambda x: jax.nn.relu(x @ w1) @ w2  # noqa: E731
    x = X[:, 0]
    np.testing.assert_array_equal(conservative_propagation(f, x, TARGET), gradient_x_input(f, x, TARGET))


def test_the_docs_examples_print_what_they_say():
    import contextlib
    import io
    import pathlib
    import re

    page = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "attribution.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", page, re.S)
              if "conservative_propagation" in b or "attn_lrp" in b or "rollout" in b]
    assert len(blocks) == 3
    out, scope = io.StringIO(), {"jax": jax, "jnp": jnp, "jp": jp}
    with contextlib.redirect_stdout(out):
        for block in blocks:
            exec(compile(block, "attribution.md", "exec"), scope)  # noqa: S102
    assert out.getvalue().split() == ["True", "(2,", "5,", "6)", "(2,", "5,", "5)"]
