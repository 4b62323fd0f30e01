"""A text trial's findings: token ids at a site (Captum's LayerIntegratedGradients recipe),
errors that say what works for per-example padding masks and integer inputs, the products
warning's account of AttnLRP, and the docs' compile-once pattern for masks."""

import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution as A
from jaxplain import metrics

IDS = jnp.array([[1, 5, 7, 2, 0, 0], [1, 4, 3, 9, 8, 6]])  # id 0 pads
KEEP = IDS != 0
MASK = nn.make_attention_mask(KEEP, KEEP)  # (2, 1, 6, 6): one mask per example


class PreLN(nn.Module):
    """LayerNorm first: no affine stem, so IG folds its steps into the batch."""

    @nn.compact
    def __call__(self, e, mask=None):
        a = nn.LayerNorm()(e)
        h = e + nn.MultiHeadDotProductAttention(num_heads=2, name="attn")(a, a, mask=mask)
        return nn.Dense(2)(h[:, 0])


@pytest.fixture(scope="module")
def pre_ln():
    e = jax.random.normal(jax.random.key(0), (2, 6, 8))
    model = PreLN()
    return model, model.init(jax.random.key(1), e), e


def test_ig_with_a_per_example_mask_says_batch_size_1_which_gives_each_example_s_ig(pre_ln):
    model, v, e = pre_ln
    f = jp.as_function(model, v, mask=MASK)
    with pytest.raises(ValueError, match=r"batch of 16 inputs, not x's 2.*Pass batch_size=1"):
        A.integrated_gradients(f, e, 0, steps=8)
    b = 0.5 * jax.random.normal(jax.random.key(2), (1, 6, 8))  # a pad embedding, say
    ig = A.integrated_gradients(f, e, 0, baseline=b, steps=16, batch_size=1)
    for i in range(2):  # the same as one call per example, its mask of batch 1 closed over
        fi = jp.as_function(model, v, mask=MASK[i:i + 1])
        np.testing.assert_allclose(ig[i], A.integrated_gradients(fi, e[i:i + 1], 0, baseline=b,
                                                                 steps=16)[0],
                                   rtol=1e-5, atol=1e-6)
    # and it is the masked model's IG: its tokens sum to the masked model's gap
    gap = f(e)[:, 0] - f(jnp.broadcast_to(b, e.shape))[:, 0]
    np.testing.assert_allclose(ig.sum((1, 2)), gap, rtol=1e-2)


def test_a_metric_refusing_a_per_example_mask_advises_one_call_per_example(pre_ln):
    model, v, e = pre_ln
    f = jp.as_function(model, v, mask=MASK)
    a = A.gradient_x_input(f, e, 0).sum(-1, keepdims=True)
    with pytest.raises(ValueError, match="one example at a time") as err:
        metrics.deletion(f, e, 0, a, steps=6, output="logit")
    assert "gradient family" not in str(err.value)  # no attribution methods for a metric
    for i in range(2):  # what it advises works: batch 1, the mask broadcasts to the copies
        fi = jp.as_function(model, v, mask=MASK[i:i + 1])
        assert np.isfinite(metrics.deletion(fi, e[i:i + 1], 0, a[i:i + 1], steps=6,
                                            output="logit").area).all()


class BoE(nn.Module):
    """A bag of embeddings on token ids; its embedding's site is "tok"."""

    @nn.compact
    def __call__(self, ids):
        e = nn.Embed(20, 8, name="tok")(ids)
        return nn.Dense(3, name="head")(jnp.tanh(e).mean(1))


@pytest.fixture(scope="module")
def boe():
    model = BoE()
    v = model.init(jax.random.key(0), IDS)
    return jp.as_function(model, v), v


def _torch_boe(v):
    torch = pytest.importorskip("torch")

    class TorchBoE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = torch.nn.Embedding(20, 8)
            self.head = torch.nn.Linear(8, 3)

        def forward(self, ids):
            return self.head(torch.tanh(self.tok(ids)).mean(1))

    net = TorchBoE().double()
    p = jax.tree.map(np.asarray, v["params"])
    with torch.no_grad():
        net.tok.weight.copy_(torch.tensor(p["tok"]["embedding"], dtype=torch.float64))
        net.head.weight.copy_(torch.tensor(p["head"]["kernel"].T, dtype=torch.float64))
        net.head.bias.copy_(torch.tensor(p["head"]["bias"], dtype=torch.float64))
    return torch, net


def test_site_methods_take_token_ids_as_captum_s_layer_methods_do(boe):
    f, v = boe
    captum_attr = pytest.importorskip("captum.attr")
    torch, net = _torch_boe(v)
    t = np.array([0, 2])
    pad = jnp.full_like(IDS, 0)
    ids = torch.tensor(np.asarray(IDS)).long()
    ours = A.layer_integrated_gradients(f, IDS, t, site="tok", baseline=pad, steps=20)
    ref = captum_attr.LayerIntegratedGradients(net, net.tok).attribute(
        ids, baselines=torch.zeros_like(ids), target=torch.tensor(t), n_steps=20)
    ref = ref.detach().numpy()
    assert ours.shape == (2, 6, 8) and ours.dtype == jnp.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    ours = A.activation_x_gradient(f, IDS, t, site="tok")
    ref = captum_attr.LayerGradientXActivation(net, net.tok).attribute(
        ids, target=torch.tensor(t)).detach().numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_integrated_gradients_at_the_embedding_from_ids_is_ig_of_the_embeddings(boe):
    f, v = boe
    embed = lambda ids: nn.Embed(20, 8).apply({"params": v["params"]["tok"]}, ids)  # noqa: E731
    head = lambda e: nn.Dense(3).apply({"params": v["params"]["head"]},  # noqa: E731
                                       jnp.tanh(e).mean(1))
    pad = jnp.full((1, 6), 3)  # any pad id, broadcast to the batch
    lig = A.layer_integrated_gradients(f, IDS, 1, site="tok", baseline=pad, steps=16)
    ig = A.integrated_gradients(head, embed(IDS), 1, baseline=embed(pad), steps=16)
    np.testing.assert_allclose(lig, ig, rtol=1e-5, atol=1e-7)
    gap = f(IDS)[:, 1] - f(jnp.broadcast_to(pad, IDS.shape))[:, 1]
    np.testing.assert_allclose(lig.sum((1, 2)), gap, rtol=1e-4)


def test_integer_inputs_that_stay_refused_say_what_fits_them(boe):
    f, _ = boe
    with pytest.raises(TypeError) as err:
        A.gradient(f, IDS, 0)
    text = str(err.value)
    assert text.index("token ids") < text.index("255")  # the ids' advice first
    assert "layer_integrated_gradients" in text
    with pytest.raises(TypeError, match="baseline must be token ids like x"):
        A.layer_integrated_gradients(f, IDS, 0, site="tok", baseline=jnp.zeros((2, 6)))
    with pytest.raises(TypeError, match="x must be a floating-point"):  # a path in x: no ids
        A.layer_conductance(f, IDS, 0, site="tok")
    dense = lambda x: x.astype(jnp.float32) @ jnp.ones((6, 2))  # noqa: E731 - runs on ints
    with pytest.raises(TypeError, match=r"astype\(jnp.float32\) / 255") as err:  # pixels
        A.activation_x_gradient(dense, IDS.astype(jnp.uint8), 0, site="x")
    assert "token" not in str(err.value)
    with pytest.raises(TypeError, match="f fails on integers"):  # a model of floats
        A.layer_integrated_gradients(lambda x: jax.lax.conv_general_dilated(
            x[..., None], jnp.ones((1, 1, 1), jnp.float32), (1,), "SAME", dimension_numbers=(
                "NWC", "WIO", "NWC"))[..., 0], IDS, 0, site="x")


def test_the_products_warning_says_what_attn_lrp_conserves():
    def attention(x):  # one head, q = k = v = x: a product of two input-dependent values
        s = jax.nn.softmax(jnp.einsum("nid,njd->nij", x, x), axis=-1)
        return jnp.einsum("nij,njd->nid", s, x).mean(1)

    x = jax.random.normal(jax.random.key(0), (4, 5, 3))
    with pytest.warns(UserWarning, match="conserves it through gates, but not through "
                                         "attention") as caught:
        A.deeplift(attention, x, 0)
    assert "median 52%" in str(caught[0].message)
    # what it says: AttnLRP's sums miss the logit through a softmax (here by 10% or more)
    r = np.asarray(A.attn_lrp(attention, x, 0, epsilon=0.0)).sum((1, 2))
    assert (np.abs(r / np.asarray(attention(x))[:, 0] - 1) > 0.1).all()


def test_the_docs_compile_once_for_masks_and_lig_from_ids_is_ig():
    doc = pathlib.Path(__file__).resolve().parents[2] / "docs" / "attribution.md"
    section = doc.read_text().split("## Token models (text)\n", 1)[1].split("\n## ", 1)[0]
    scope = {}
    block = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    exec(compile(block, str(doc), "exec"), scope)  # noqa: S102 - our docs
    np.testing.assert_allclose(scope["lig"], scope["ig"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scope["ig_jit"], scope["ig_masked"], rtol=1e-4, atol=1e-6)
    explain, emb, t = scope["explain"], scope["emb"], scope["t"]
    other = jnp.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], bool)
    explain(emb, nn.make_attention_mask(other, other), t).block_until_ready()
    assert explain._cache_size() == 1  # a second mask, no second compilation
