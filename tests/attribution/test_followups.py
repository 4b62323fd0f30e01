"""Follow-ups of the text-model fixes: as_function's method= for NNX and Equinox, wrapper modules
of another entry point, tied maxima of a reduce_max pool, the advice of a model that takes only
x's batch, and Grad-CAM from token ids."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain as jp
from jaxplain import attribution as A
from jaxplain import lrp as L
from jaxplain import metrics as M
from jaxplain.core._pools import first_max
from jaxplain.metrics._robustness import draw_noise


class _NNXText(nnx.Module):
    def __init__(self, rngs):
        self.tok = nnx.Embed(10, 4, rngs=rngs)
        self.hidden = nnx.Linear(4, 6, rngs=rngs)
        self.head = nnx.Linear(6, 2, rngs=rngs)

    def from_embeddings(self, e):  # (n, L, 4) -> (n, 2)
        return self.head(nnx.relu(self.hidden(e)).mean(axis=1))

    def __call__(self, ids):
        return self.from_embeddings(self.tok(ids))


class _NNXWrapper(nnx.Module):  # the guide's wrapper of another entry point
    def __init__(self, model):
        self.model = model

    def __call__(self, e):
        return self.model.from_embeddings(e)


class _EqxText(eqx.Module):
    tok: eqx.nn.Embedding
    hidden: eqx.nn.Linear
    head: eqx.nn.Linear

    def __init__(self, key):
        k = jax.random.split(key, 3)
        self.tok = eqx.nn.Embedding(10, 4, key=k[0])
        self.hidden = eqx.nn.Linear(4, 6, key=k[1])
        self.head = eqx.nn.Linear(6, 2, key=k[2])

    def from_embeddings(self, e):  # one example: (L, 4) -> (2,)
        return self.head(jax.nn.relu(jax.vmap(self.hidden)(e)).mean(axis=0))

    def __call__(self, ids):
        return self.from_embeddings(jax.vmap(self.tok)(ids))


class _EqxWrapper(eqx.Module):
    model: _EqxText

    def __call__(self, e):
        return self.model.from_embeddings(e)


IDS = jnp.array([[3, 7, 5, 0], [4, 7, 2, 8]])


def _text_models():
    nnx_model, eqx_model = _NNXText(nnx.Rngs(0)), _EqxText(jax.random.key(0))
    return [(nnx_model, _NNXWrapper, nnx_model.tok(IDS)),
            (eqx_model, _EqxWrapper, jax.vmap(jax.vmap(eqx_model.tok))(IDS))]


@pytest.mark.parametrize("k", [0, 1], ids=["nnx", "equinox"])
def test_method_is_refused_for_nnx_and_equinox_with_the_way_out(k):
    model, _, _ = _text_models()[k]
    with pytest.raises(TypeError, match=r"method= is for Flax Linen's apply.*__call__.*"
                                        r"self\.model\.from_embeddings\(e\).*Token models"):
        jp.as_function(model, method="from_embeddings")


def test_an_nnx_call_that_takes_method_still_gets_it():
    class Two(nnx.Module):
        def __call__(self, x, method="double"):
            return 2 * x if method == "double" else 3 * x

    f = jp.as_function(Two(), method="triple")
    np.testing.assert_allclose(f(jnp.ones((2, 3))), 3.0)


@pytest.mark.parametrize("k", [0, 1], ids=["nnx", "equinox"])
def test_a_wrapper_of_from_embeddings_keeps_the_site_names_below_its_attribute(k):
    """The guide's 'Token models': a wrapper calling self.model.from_embeddings(e) runs the
    model's layers under their names, below the attribute (model/hidden for hidden)."""
    model, wrapper, emb = _text_models()[k]
    f_ids, f = jp.as_function(model), jp.as_function(wrapper(model))
    np.testing.assert_allclose(f(emb), f_ids(IDS), rtol=1e-6)
    inner = [s.name for s in jp.sites(f_ids, IDS) if s.name != "tok"]
    assert inner == ["hidden", "relu", "head"]
    assert [s.name for s in jp.sites(f, emb)] == [f"model/{n}" for n in inner] + ["model"]


# Tied maxima: a reduce_max pool routes them as the reduce_window spelling does.

def test_first_max_is_jnp_max_with_the_gradient_of_a_window_max():
    x = jnp.array([[[1.0, 3.0], [3.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]])  # (2, 2, 2), ties

    def window(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2), (1, 2, 2),
                                     "VALID").sum()

    np.testing.assert_array_equal(first_max(x, (1, 2)), x.max(axis=(1, 2)))
    grad = jax.grad(lambda x: first_max(x, (1, 2)).sum())(x)
    np.testing.assert_array_equal(grad, jax.grad(window)(x))
    np.testing.assert_array_equal(grad, [[[0, 1], [0, 0]], [[1, 0], [0, 0]]])  # the first
    assert float(jax.grad(lambda x: x.max(axis=(1, 2)).sum())(x)[1, 0, 0]) == 0.25  # jnp splits


def _spellings(kind):
    """A text CNN (max over time) or an NHWC CNN (global max pool), max spelled ``reduce_max``
    and ``reduce_window``, float64."""
    k = jax.random.split(jax.random.key(0), 3)
    if kind == "text":
        w = jax.random.normal(k[0], (3, 8, 12), jnp.float64) / 3
        dims, axes, shape = ("NWC", "WIO", "NWC"), (1,), (10, 8)
    else:
        w = jax.random.normal(k[0], (3, 3, 2, 6), jnp.float64) / 3
        dims, axes, shape = ("NHWC", "HWIO", "NHWC"), (1, 2), (4, 4, 2)
    b = jax.random.normal(k[1], (w.shape[-1],), jnp.float64) * 0.1
    head = jax.random.normal(k[2], (w.shape[-1], 3), jnp.float64)

    def features(x):
        h = jax.lax.conv_general_dilated(x, w, (1,) * (len(shape) - 1), "SAME",
                                         dimension_numbers=dims)
        return jax.nn.relu(h + b)

    def windowed(x):
        h = features(x)
        window = tuple(h.shape[a] if a in axes else 1 for a in range(h.ndim))
        return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, window, window,
                                     "VALID").squeeze(axes) @ head

    return (lambda x: features(x).max(axis=axes) @ head), windowed, shape


def test_constant_baselines_give_equal_deeplift_for_both_spellings():
    """A constant reference's maxima tie over the interior positions; jnp.max's gradient split
    them, so the spellings differed (DeepLIFT from 1.0 by 1.44 on the text CNN, DeepLIFT-SHAP
    by 0.72)."""
    with jax.enable_x64(True):
        reduced, windowed, shape = _spellings("text")
        x = jax.random.normal(jax.random.key(3), (4, *shape), jnp.float64)
        b = jnp.full((1, *shape), 1.0)
        a = A.deeplift(reduced, x, 0, baseline=b)
        np.testing.assert_allclose(a, A.deeplift(windowed, x, 0, baseline=b), atol=1e-12)
        assert float(jnp.abs(A.completeness_delta(reduced, x, 0, a, baseline=b)).max()) < 1e-10
        refs = jnp.stack([jnp.full(shape, 1.0), jnp.full(shape, -0.5)])
        np.testing.assert_allclose(A.deeplift_shap(reduced, x, 0, baselines=refs),
                                   A.deeplift_shap(windowed, x, 0, baselines=refs), atol=1e-12)


def test_constant_inputs_give_equal_lrp_and_guided_backprop_for_both_spellings():
    """A constant input's maxima tie (they differed by 7.4 with EpsilonAlpha2Beta1 and by 0.66
    with guided backprop on the image CNN, whose rule has no pool method)."""
    with jax.enable_x64(True):
        reduced, windowed, shape = _spellings("image")
        flat = jnp.full((2, *shape), 0.7)
        for rules in (L.EpsilonPlus(), L.EpsilonAlpha2Beta1()):
            np.testing.assert_allclose(A.lrp(reduced, flat, 0, rules=rules),
                                       A.lrp(windowed, flat, 0, rules=rules), atol=1e-12)
        np.testing.assert_allclose(A.guided_backprop(reduced, flat, 0),
                                   A.guided_backprop(windowed, flat, 0), atol=1e-12)


# A model that closes over a per-example mask of batch n takes only batches of n.

N = 3
MASK = jnp.array([1.0, 0.0, 1.0]).reshape(N, 1, 1, 1) * jnp.ones((N, 4, 4, 1))
MASK = MASK.at[1, :2].set(1.0)  # example 1 keeps its top half


def _masked_cnn(mask):
    w = jax.random.normal(jax.random.key(0), (3, 3, 1, 4)) / 3
    head = jax.random.normal(jax.random.key(1), (4, 2))

    def f(x):
        h = jax.lax.conv_general_dilated(x * mask, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        with jax.named_scope("features"):
            h = jax.nn.relu(h)
        return h.mean(axis=(1, 2)) @ head

    return f


X = jax.random.normal(jax.random.key(2), (N, 4, 4, 1))


def test_score_cam_advises_batch_size_1_which_works():
    f = _masked_cnn(MASK)
    with pytest.raises(ValueError, match=r"Pass batch_size=1 \(one channel at a time"):
        A.score_cam(f, X, 0, site="features")
    cam = A.score_cam(f, X, 0, site="features", batch_size=1)
    for i in range(N):  # as one example at a time with its own mask
        one = A.score_cam(_masked_cnn(MASK[i:i + 1]), X[i:i + 1], 0, site="features")
        np.testing.assert_allclose(cam[i:i + 1], one, rtol=1e-5, atol=1e-6)


def test_deeplift_and_deeplift_shap_advise_methods_on_x_batch():
    f = _masked_cnn(MASK)
    for method in (lambda: A.deeplift(f, X, 0),
                   lambda: A.deeplift_shap(f, X, 0, baselines=jnp.zeros((2, 4, 4, 1)))):
        with pytest.raises(ValueError, match="Use a method that evaluates f on x's batch: the "
                                             "gradient family, LRP, occlusion"):
            method()
    # one of them: LRP, as one example at a time with its own mask
    r = A.lrp(f, X, 0, rules=L.Epsilon(1e-6))
    for i in range(N):
        one = A.lrp(_masked_cnn(MASK[i:i + 1]), X[i:i + 1], 0, rules=L.Epsilon(1e-6))
        np.testing.assert_allclose(r[i:i + 1], one, rtol=1e-5, atol=1e-6)


def test_robustness_scores_a_model_tied_to_the_batch_at_any_batch_size():
    """Each noisy copy is explained as a batch of x's size, so a model closing over one mask
    row per example is scored (it was refused but at batch_size=1)."""
    f, key = _masked_cnn(MASK), jax.random.key(4)
    got = M.max_sensitivity(f, X, 0, A.gradient, key=key, samples=3)
    for i in range(N):  # the module's formula on example i's own draws and its own mask
        g = _masked_cnn(MASK[i:i + 1])
        eps = draw_noise(jax.random.fold_in(key, i), 0.02, X[i], 3, "uniform")
        a0 = A.gradient(g, X[i:i + 1], 0)
        changes = [jnp.linalg.norm(A.gradient(g, X[i:i + 1] + e, 0) - a0) for e in eps]
        np.testing.assert_allclose(got[i], max(changes) / jnp.linalg.norm(a0), rtol=1e-4)


# Grad-CAM at a text CNN's convolution, from the token ids.

def test_grad_cam_takes_token_ids_at_a_site_after_the_embedding():
    k = jax.random.split(jax.random.key(5), 3)
    table = jax.random.normal(k[0], (10, 4))
    w, head = jax.random.normal(k[1], (3, 4, 5)) / 2, jax.random.normal(k[2], (5, 2))

    def f_emb(e):  # (n, L, 4) -> (n, 2)
        with jax.named_scope("conv"):
            h = jax.nn.relu(jax.lax.conv_general_dilated(
                e, w, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC")))
        return h.max(axis=1) @ head

    def f_ids(ids):
        return f_emb(table[ids])

    t = jnp.array([0, 1])
    for method in (A.grad_cam, A.grad_cam_plus_plus):
        cam = method(f_ids, IDS, t, site="conv", resize=False)
        assert cam.dtype == jnp.float32 and cam.shape == (2, 4)
        np.testing.assert_allclose(cam, method(f_emb, table[IDS], t, site="conv",
                                               resize=False), rtol=1e-6)
        assert float(jnp.abs(cam).max()) > 0
    with pytest.raises(TypeError):  # guided backprop differentiates at x: ids are refused
        A.guided_grad_cam(f_ids, IDS, t, site="conv")
