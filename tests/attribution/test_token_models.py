"""docs/attribution.md's "Token models (text)": its example runs, and what it says holds."""

import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "attribution.md"


@pytest.fixture(scope="module")
def example():
    """The namespace the section's example leaves behind."""
    section = DOC.read_text().split("## Token models (text)\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    scope = {}
    exec(compile(blocks[0], f"{DOC}: Token models", "exec"), scope)  # noqa: S102 - our docs
    return scope


def test_the_example_gives_one_score_per_token(example):
    for name in ("ig", "occ", "shap", "ig_masked"):
        assert example[name].shape == (2, 6)


def test_per_token_scores_are_what_the_section_says(example):
    f, emb, pad, t = example["f"], example["emb"], example["pad"], np.asarray(example["t"])
    rows = np.arange(2)
    gap = np.asarray(f(emb))[rows, t] - np.asarray(f(pad))[0, t]
    assert np.abs(gap).min() > 1e-3  # a gap to explain
    # IG's tokens sum to the gap (16 steps: within 1%); KernelSHAP's per-token values exactly
    np.testing.assert_allclose(np.asarray(example["ig"]).sum(1), gap, rtol=1e-2)
    np.testing.assert_allclose(np.asarray(example["shap"]).sum(1), gap, rtol=1e-4, atol=1e-6)
    # occlusion's window=(1,) is one whole token: f(x) - f(x with that token at the baseline),
    # the same on every embedding dimension, and window=(1, D) is the same windows
    occ = np.asarray(A.occlusion(f, emb, t, window=(1,), baseline=pad))
    np.testing.assert_array_equal(occ, np.repeat(occ[..., :1], 8, axis=-1))
    np.testing.assert_allclose(occ[..., 0], np.asarray(example["occ"]))
    np.testing.assert_allclose(A.occlusion(f, emb, t, window=(1, 8), baseline=pad), occ)
    for i in range(6):
        dropped = emb.at[:, i].set(pad[0, i])
        np.testing.assert_allclose(occ[:, i, 0], np.asarray(f(emb) - f(dropped))[rows, t],
                                   rtol=1e-5, atol=1e-6)
    # window=1 (an int) occludes single dimensions instead: not one value per token
    single = np.asarray(A.occlusion(f, emb, t, window=1, baseline=pad))
    assert not np.allclose(single, np.repeat(single[..., :1], 8, axis=-1))
    # the example's pad positions hold the baseline already: nothing to attribute
    assert np.abs(np.asarray(example["shap"])[0, 4:]).max() < 1e-6
    assert np.abs(np.asarray(example["occ"])[0, 4:]).max() == 0


def test_the_padding_mask_reaches_the_model(example):
    model, variables, ids, emb = (example[k] for k in ("model", "variables", "ids", "emb"))
    keep = ids != 0
    mask = nn.make_attention_mask(keep, keep)
    want = model.apply(variables, ids, mask=mask)
    np.testing.assert_allclose(example["f_masked"](emb), want, rtol=1e-6)
    assert not np.allclose(example["f"](emb)[0], want[0])  # the mask changes example 0


def test_which_methods_take_a_per_example_mask(example):
    """The section's list: batches of n take an (n, 1, L, L) mask; DeepLIFT, DeepLIFT-SHAP and
    GradientSHAP need a mask of batch 1."""
    import jaxplain as jp

    model, variables, ids, emb, pad, t = (example[k] for k in
                                          ("model", "variables", "ids", "emb", "pad", "t"))
    keep = ids != 0
    per_example = example["f_masked"]
    shared = jp.as_function(model, variables, method="from_embeddings",
                            mask=nn.make_attention_mask(keep[1:], keep[1:]))  # no pads
    key, tokens, refs = jax.random.key(0), jnp.arange(6)[:, None], jnp.concatenate([pad, pad])
    for method in (lambda g: A.gradient_x_input(g, emb, t),
                   lambda g: A.smoothgrad(g, emb, t, key=key, samples=2),
                   lambda g: A.attn_lrp(g, emb, t),
                   lambda g: A.attention_rollout(g, emb),
                   lambda g: A.shapley_sampling(g, emb, t, key=key, samples=2,
                                                feature_mask=tokens, baseline=pad),
                   lambda g: A.lime(g, emb, t, key=key, samples=16, feature_mask=tokens)):
        assert np.isfinite(np.asarray(method(per_example))).all()
    for method in (lambda g: A.deeplift(g, emb, t, baseline=pad),
                   lambda g: A.deeplift_shap(g, emb, t, baselines=refs),
                   lambda g: A.gradient_shap(g, emb, t, key=key, baselines=refs)):
        with pytest.raises(ValueError, match="broadcast"):
            method(per_example)
        assert np.isfinite(np.asarray(method(shared))).all()


def test_grouped_shapley_values_repeat_over_each_group():
    """The perturbation table: with a feature_mask each element holds its group's whole value,
    so the groups (one element each) sum to the gap and the array to sum_g size_g * phi_g."""
    w = jnp.arange(1.0, 7.0).reshape(3, 2)
    f = lambda x: jnp.stack([(x * w).sum((1, 2)), -(x * w).sum((1, 2))], -1)  # noqa: E731
    x, groups = jnp.ones((1, 3, 2)), jnp.arange(3)[:, None]
    for r in (A.shapley_sampling(f, x, 0, key=jax.random.key(0), samples=3, feature_mask=groups),
              A.kernel_shap(f, x, 0, feature_mask=groups)):
        np.testing.assert_allclose(r[0], [[3, 3], [7, 7], [11, 11]], rtol=1e-5)
        np.testing.assert_allclose(r[0, :, 0].sum(), 21.0, rtol=1e-5)  # f(x) - f(0)


class _Encoder(nn.Module):
    """A one-block pre-LN encoder without biases; `act` is its MLP's activation."""

    act: str

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(16, use_bias=False)(x)
        a = nn.LayerNorm(use_bias=False)(h)
        h = h + nn.MultiHeadDotProductAttention(num_heads=2, use_bias=False, name="attn")(a)
        m = nn.Dense(32, use_bias=False)(nn.LayerNorm(use_bias=False)(h))
        m = nn.gelu(m) if self.act == "gelu" else nn.relu(m)
        h = h + nn.Dense(16, use_bias=False)(m)
        return nn.Dense(3, use_bias=False)(h.mean(axis=1))


def test_conservation_needs_relu_or_no_mlp_activations():
    """The transformers section: conservative propagation sums to the logit on a bias-free
    encoder with a ReLU MLP, and misses it by 20-36% with a GELU MLP."""
    import jaxplain as jp

    x = jax.random.normal(jax.random.key(0), (4, 6, 5))
    for act, low, high in (("relu", 0.0, 1e-4), ("gelu", 0.19, 0.37)):
        encoder = _Encoder(act)
        g = jp.as_function(encoder, encoder.init(jax.random.key(1), x))
        total = np.asarray(A.conservative_propagation(g, x, 0)).sum(axis=(1, 2))
        logit = np.asarray(g(x))[:, 0]
        missed = np.abs(total - logit) / np.abs(logit)
        assert low <= missed.min() and missed.max() <= high, (act, missed)
