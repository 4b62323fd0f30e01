"""Invariants every attribution method must satisfy, driven by one table.

jit equals eager, vmap equals a loop, chunked equals unchunked, a second call does not retrace,
finite outputs; plus the clear errors on bad input.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A
from jaxplain.lrp import EpsilonPlusFlat
from tests.attribution import twins

KEY = jax.random.key(0)
SUPERPIXELS = (np.arange(8)[:, None] // 4 * 2 + np.arange(8)[None, :] // 4)[:, :, None]
BASELINES = 0.5 * twins.inputs(5, (3, 8, 8, 2), "nonneg")  # a distribution of 3 references

# name -> (method, options, chunked option or None)
REGISTRY = {
    "gradient": (A.gradient, {}, None),
    "sensitivity": (A.gradient, {"squared": True}, None),
    "gradient_x_input": (A.gradient_x_input, {}, None),
    "integrated_gradients": (A.integrated_gradients, {"steps": 6, "baseline": 0.1}, {"batch_size": 4}),
    "ig_riemann_trapezoid": (A.integrated_gradients, {"steps": 5, "method": "riemann_trapezoid"},
                             {"batch_size": 2}),
    "smoothgrad": (A.smoothgrad, {"key": KEY, "samples": 5}, {"batch_size": 2}),
    "deeplift": (A.deeplift, {"baseline": 0.2}, None),
    "deeplift_shap": (A.deeplift_shap, {"baselines": BASELINES}, {"batch_size": 2}),
    "gradient_shap": (A.gradient_shap, {"key": KEY, "baselines": BASELINES, "samples": 5,
                                        "stdev": 0.1}, {"batch_size": 2}),
    "guided_backprop": (A.guided_backprop, {}, None),
    "deconvnet": (A.deconvnet, {}, None),
    "lrp": (A.lrp, {"rules": EpsilonPlusFlat()}, None),
    "conservative_propagation": (A.conservative_propagation, {}, None),
    "attn_lrp": (A.attn_lrp, {}, None),
    "occlusion": (A.occlusion, {"window": (3, 3), "stride": 2}, {"batch_size": 3}),
    "feature_ablation": (A.feature_ablation, {"feature_mask": SUPERPIXELS}, {"batch_size": 3}),
    "shapley_sampling": (A.shapley_sampling, {"key": KEY, "samples": 3,
                                              "feature_mask": SUPERPIXELS}, {"batch_size": 4}),
    "kernel_shap": (A.kernel_shap, {"feature_mask": SUPERPIXELS}, {"batch_size": 5}),
    "lime": (A.lime, {"key": KEY, "samples": 20, "feature_mask": SUPERPIXELS}, {"batch_size": 6}),
    "grad_cam": (A.grad_cam, {"site": "relu_1"}, None),
    "guided_grad_cam": (A.guided_grad_cam, {"site": "relu_1"}, None),
    "grad_cam_plus_plus": (A.grad_cam_plus_plus, {"site": "relu_1"}, None),
    "score_cam": (A.score_cam, {"site": "relu_1"}, {"batch_size": 4}),
    "score_cam_logit_softmax": (A.score_cam, {"site": "relu_1", "score": "logit",
                                              "normalize": "softmax", "baseline": 0.1},
                                {"batch_size": 4}),
    "activation_x_gradient": (A.activation_x_gradient, {"site": "relu_1"}, None),
    "layer_conductance": (A.layer_conductance, {"site": "relu_1", "steps": 5}, {"batch_size": 2}),
    "layer_integrated_gradients": (A.layer_integrated_gradients, {"site": "relu_1", "steps": 5},
                                   {"batch_size": 2}),
    "neuron_conductance": (A.neuron_conductance, {"site": "relu_1", "neuron": 5, "steps": 5},
                           {"batch_size": 2}),
}

PARAMS = twins.cnn_params(0)
F = twins.cnn(PARAMS)
X = twins.inputs(0, (4, 8, 8, 2), "nonneg")
T = np.array([0, 1, 2, 3])


def assert_close(a, b, rtol=1e-4):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.abs(b).max(), 1e-6)
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_jit_equals_eager_and_finite(name):
    method, opts, _ = REGISTRY[name]
    eager = method(F, X, T, **opts)
    assert np.isfinite(np.asarray(eager)).all()
    assert np.abs(np.asarray(eager)).max() > 0
    jitted = jax.jit(lambda x, t: method(F, x, t, **opts))(X, T)
    assert_close(jitted, eager)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_vmap_equals_loop(name):
    method, opts, _ = REGISTRY[name]
    xs, ts = X.reshape(2, 2, 8, 8, 2), T.reshape(2, 2)
    mapped = jax.vmap(lambda x, t: method(F, x, t, **opts))(xs, ts)
    looped = np.stack([np.asarray(method(F, xs[i], ts[i], **opts)) for i in range(2)])
    assert_close(mapped, looped)


@pytest.mark.parametrize("name", sorted(n for n in REGISTRY if REGISTRY[n][2]))
def test_chunked_equals_unchunked(name):
    method, opts, chunked = REGISTRY[name]
    assert_close(method(F, X, T, **opts, **chunked), method(F, X, T, **opts))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a CPU rewrite")
@pytest.mark.parametrize("name", sorted(n for n in REGISTRY if REGISTRY[n][2]))
def test_chunked_loops_keep_convolutions_in_the_fast_layout(name):
    # inside a loop XLA:CPU leaves a gradient's convolution with its kernel's in/out axes
    # swapped ("..._01oi->..."), several times slower; the chunk loops rewrite it
    method, opts, chunked = REGISTRY[name]
    run = jax.jit(lambda x, t: method(F, x, t, **opts, **chunked))
    labels = set(re.findall(r"dim_labels=([^,\s]+)", run.lower(X, T).compile().as_text()))
    assert labels == {"b01f_01io->b01f"}, labels


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_second_call_does_not_retrace(name):
    method, opts, _ = REGISTRY[name]
    traces = []

    def counted(x):
        traces.append(1)
        return F(x)

    method(counted, X, T, **opts)
    first = len(traces)
    assert first > 0
    method(counted, X + 0.5, T[::-1].copy(), **opts)  # new values, same shapes
    assert len(traces) == first, f"{name} retraced f on a second call"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_target_out_of_range(name):
    method, opts, _ = REGISTRY[name]
    with pytest.raises(ValueError, match="target"):
        method(F, X, np.array([0, 1, 2, 5]), **opts)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_non_float_x(name):
    method, opts, _ = REGISTRY[name]
    with pytest.raises(TypeError, match="x must be a floating-point"):
        method(F, X.astype(np.int32), T, **opts)


@pytest.mark.parametrize("method", [A.integrated_gradients, A.deeplift, A.occlusion,
                                    A.feature_ablation, A.kernel_shap, A.layer_conductance,
                                    A.layer_integrated_gradients, A.score_cam,
                                    A.neuron_conductance])
def test_wrong_baseline_shape(method):
    opts = {"window": 2} if method is A.occlusion else {}
    sited = (A.layer_conductance, A.layer_integrated_gradients, A.score_cam, A.neuron_conductance)
    opts |= {"site": "relu_1"} if method in sited else {}
    opts |= {"neuron": 0} if method is A.neuron_conductance else {}
    with pytest.raises(ValueError, match="baseline"):
        method(F, X, T, baseline=np.zeros((3, 8, 8, 2), np.float32), **opts)


@pytest.mark.parametrize("method", [A.gradient_shap, A.deeplift_shap])
def test_wrong_baselines(method):
    opts = {"key": KEY} if method is A.gradient_shap else {}
    for bad in (np.zeros((3, 8, 8, 1), np.float32), np.zeros((0, 8, 8, 2), np.float32),
                np.zeros((8, 8, 2), np.float32), 0.0):
        with pytest.raises(ValueError, match=r"baselines must have shape \(m, 8, 8, 2\)"):
            method(F, X, T, baselines=bad, **opts)
    with pytest.raises(ValueError, match=r"pass b\[None\]"):  # one baseline, no leading axis
        method(F, X, T, baselines=np.zeros((8, 8, 2), np.float32), **opts)
    with pytest.raises(ValueError, match="baselines is required"):
        method(F, X, T, baselines=None, **opts)
    with pytest.raises(TypeError, match="baselines must be numeric"):
        method(F, X, T, baselines=np.zeros((3, 8, 8, 2), bool), **opts)


@pytest.mark.parametrize("method", [A.smoothgrad, A.shapley_sampling, A.lime, A.gradient_shap])
def test_missing_key(method):
    opts = {"baselines": BASELINES} if method is A.gradient_shap else {}
    with pytest.raises(ValueError, match="key"):
        method(F, X, T, key=None, **opts)
    with pytest.raises(ValueError, match="key"):
        A.kernel_shap(F, X, T, samples=10, feature_mask=SUPERPIXELS)


@pytest.mark.parametrize("method", [A.grad_cam, A.activation_x_gradient, A.layer_conductance,
                                    A.layer_integrated_gradients, A.guided_grad_cam,
                                    A.grad_cam_plus_plus, A.score_cam, A.neuron_conductance])
def test_unknown_site(method):
    opts = {"neuron": 0} if method is A.neuron_conductance else {}
    with pytest.raises(ValueError, match="relu_1"):
        method(F, X, T, site="relu_2", **opts)


def test_other_bad_options():
    with pytest.raises(ValueError, match="method"):
        A.integrated_gradients(F, X, T, method="simpson")
    with pytest.raises(ValueError, match="steps"):
        A.integrated_gradients(F, X, T, steps=1, method="riemann_left")
    with pytest.raises(ValueError, match="kind"):
        A.smoothgrad(F, X, T, key=KEY, kind="mean")
    with pytest.raises(ValueError, match="stride"):
        A.occlusion(F, X, T, window=(2, 2), stride=3)
    with pytest.raises(ValueError, match="feature_mask"):
        A.feature_ablation(F, X, T, feature_mask=np.zeros((3, 3), np.int32))
    with pytest.raises(TypeError, match="feature_mask"):
        A.feature_ablation(F, X, T, feature_mask=np.zeros((8, 8, 2)))
    with pytest.raises(ValueError, match="target"):
        A.gradient(F, X, np.array([0, 1]))
    with pytest.raises(ValueError, match="target"):
        A.gradient(F, X, None)
    with pytest.raises(ValueError, match="spatial"):
        A.grad_cam(F, X, T, site="linear")
    with pytest.raises(ValueError, match="spatial"):
        A.guided_grad_cam(F, X, T, site="linear")
    with pytest.raises(ValueError, match="interpolation"):
        A.guided_grad_cam(F, X, T, site="relu_1", interpolation="bicubic")
    for method in (A.grad_cam_plus_plus, A.score_cam):
        with pytest.raises(ValueError, match="spatial"):
            method(F, X, T, site="linear")
    with pytest.raises(ValueError, match="normalize"):
        A.score_cam(F, X, T, site="relu_1", normalize="l1")
    with pytest.raises(ValueError, match="score"):
        A.score_cam(F, X, T, site="relu_1", score="margin")
    with pytest.raises(ValueError, match="batch_size"):
        A.score_cam(F, X, T, site="relu_1", batch_size=-1)
    with pytest.raises(ValueError, match="stdev"):
        A.gradient_shap(F, X, T, key=KEY, baselines=BASELINES, stdev=-0.1)
    with pytest.raises(ValueError, match="samples"):
        A.gradient_shap(F, X, T, key=KEY, baselines=BASELINES, samples=0)
    with pytest.raises(ValueError, match="14"):
        A.kernel_shap(F, X, T)
    with pytest.raises(TypeError, match="hashable"):
        A.gradient(_Unhashable(), X, T)


class _Unhashable:
    __hash__ = None

    def __call__(self, x):
        return F(x)


def test_traced_target_inside_user_jit():
    out = jax.jit(lambda t: A.integrated_gradients(F, X, t, steps=4))(jnp.asarray(T))
    assert_close(out, A.integrated_gradients(F, X, T, steps=4))


def _rows(x):
    with jax.named_scope("rows"):  # a (n, 8, 16) site of (n, 8, 8, 2) images
        r = jax.nn.relu(x.reshape(x.shape[0], 8, 16))
    return r.mean(axis=1) @ jnp.ones((16, 5))


def test_guided_grad_cam_needs_a_map_with_the_inputs_axes():
    with pytest.raises(ValueError, match="guided_grad_cam needs the site 'rows'.*as many axes"):
        A.guided_grad_cam(_rows, X, T, site="rows")
    assert A.grad_cam(_rows, X, T, site="rows", resize=False).shape == (4, 8)
