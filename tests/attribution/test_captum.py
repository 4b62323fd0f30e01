"""Agreement with Captum on twin networks (same weights): max relative error <= 1e-4."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

import jaxplain as jp  # noqa: E402
from jaxplain import attribution as A  # noqa: E402
from tests.attribution import twins  # noqa: E402

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
TOL = 1e-4
SEEDS = (0, 1)


def _nets(seed, pool="max"):
    mp, cp = twins.mlp_params(seed), twins.cnn_params(seed)
    return {
        "mlp": (twins.mlp(mp), twins.torch_mlp(mp), (6, 10)),
        "cnn": (twins.cnn(cp, pool=pool), twins.torch_cnn(cp, pool=pool), (4, 8, 8, 2)),
    }


_CACHE = {}


def nets(seed, pool="max"):
    if (seed, pool) not in _CACHE:
        _CACHE[seed, pool] = _nets(seed, pool)
    return _CACHE[seed, pool]


def _case(seed, net, kind, pool="max"):
    f, model, shape = nets(seed, pool)[net]
    x = twins.inputs(seed, shape, kind)
    target = np.arange(shape[0]) % 5
    return f, model, x, target


def _baseline(kind, x, seed):
    if kind == "zero":
        return np.zeros_like(x)
    return (0.3 * np.random.default_rng(seed + 7).normal(size=x.shape)).astype(np.float32)


def _captum(cls, model, x, target, **kwargs):
    attr = cls(model).attribute(twins.to_torch(x), target=torch.tensor(target), **kwargs)
    return twins.from_torch(attr)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("net", ["mlp", "cnn"])
@pytest.mark.parametrize("kind", ["signed", "nonneg"])
def test_gradient_and_gradient_x_input(seed, net, kind):
    f, model, x, t = _case(seed, net, kind)
    ref = _captum(captum_attr.Saliency, model, x, t, abs=False)
    assert twins.relative_error(A.gradient(f, x, t), ref) <= TOL
    ref = _captum(captum_attr.InputXGradient, model, x, t)
    assert twins.relative_error(A.gradient_x_input(f, x, t), ref) <= TOL


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_left",
                                    "riemann_right", "riemann_middle"])
@pytest.mark.parametrize("net", ["mlp", "cnn"])
@pytest.mark.parametrize("baseline", ["zero", "random"])
def test_integrated_gradients(method, net, baseline):
    for seed, kind in ((0, "signed"), (1, "nonneg")):
        f, model, x, t = _case(seed, net, kind)
        b = _baseline(baseline, x, seed)
        ref = _captum(captum_attr.IntegratedGradients, model, x, t, baselines=twins.to_torch(b),
                      n_steps=20, method=method)
        ours = A.integrated_gradients(f, x, t, baseline=b, steps=20, method=method)
        assert twins.relative_error(ours, ref) <= TOL, (seed, kind)


@pytest.mark.parametrize("net", ["mlp", "cnn"])
@pytest.mark.parametrize("baseline", ["zero", "random"])
def test_deeplift(net, baseline):
    for seed, kind in ((0, "signed"), (1, "nonneg")):
        f, model, x, t = _case(seed, net, kind, pool="avg")
        b = _baseline(baseline, x, seed)
        ref = _captum(captum_attr.DeepLift, model, x, t, baselines=twins.to_torch(b))
        assert twins.relative_error(A.deeplift(f, x, t, baseline=b), ref) <= TOL, (seed, kind)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_deeplift_rescales_smooth_activations_as_captum(activation):
    """The rescale rule at tanh and sigmoid (Captum's supported non-linearities) agrees with
    Captum, and the attributions sum to f(x) - f(b) exactly as the rule promises."""
    for seed, kind in ((0, "signed"), (1, "nonneg")):
        params = twins.mlp_params(seed)
        f, model = twins.mlp(params, activation=activation), twins.torch_mlp(params, activation=activation)
        x = twins.inputs(seed, (6, 10), kind)
        t = np.arange(6) % 5
        for b in (np.zeros_like(x), _baseline("random", x, seed)):
            ref = _captum(captum_attr.DeepLift, model, x, t, baselines=twins.to_torch(b))
            ours = A.deeplift(f, x, t, baseline=b)
            assert twins.relative_error(ours, ref) <= TOL, (seed, kind)
            delta = np.asarray(A.completeness_delta(f, x, t, ours, baseline=b))
            assert np.abs(delta).max() <= 1e-5, delta


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_guided_backprop_and_deconvnet(seed, net):
    f, model, x, t = _case(seed, net, "signed")
    ref = _captum(captum_attr.GuidedBackprop, model, x, t)
    assert twins.relative_error(A.guided_backprop(f, x, t), ref) <= TOL
    ref = _captum(captum_attr.Deconvolution, model, x, t)
    assert twins.relative_error(A.deconvnet(f, x, t), ref) <= TOL


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("window,stride", [((2, 2), 1), ((3, 3), 2), ((3, 2), (2, 1))])
def test_occlusion_cnn(seed, window, stride):
    f, model, x, t = _case(seed, "cnn", "nonneg")
    strides = (1,) + ((stride,) * 2 if isinstance(stride, int) else stride)
    ref = _captum(captum_attr.Occlusion, model, x, t, sliding_window_shapes=(2,) + window,
                  strides=strides, baselines=0.25)
    ours = A.occlusion(f, x, t, window=window, stride=stride, baseline=0.25)
    assert twins.relative_error(ours, ref) <= TOL


@pytest.mark.parametrize("seed", SEEDS)
def test_occlusion_mlp(seed):
    f, model, x, t = _case(seed, "mlp", "signed")
    ref = _captum(captum_attr.Occlusion, model, x, t, sliding_window_shapes=(3,), strides=2)
    assert twins.relative_error(A.occlusion(f, x, t, window=3, stride=2), ref) <= TOL


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("baseline", ["zero", "random"])
def test_feature_ablation(seed, baseline):
    f, model, x, t = _case(seed, "cnn", "signed")
    b = _baseline(baseline, x, seed)
    superpixels = (np.arange(8)[:, None] // 3 * 3 + np.arange(8)[None, :] // 3)[:, :, None]
    mask_nchw = torch.tensor(np.broadcast_to(superpixels.transpose(2, 0, 1), (2, 8, 8)).copy())[None]
    ref = _captum(captum_attr.FeatureAblation, model, x, t, baselines=twins.to_torch(b),
                  feature_mask=mask_nchw)
    ours = A.feature_ablation(f, x, t, feature_mask=superpixels, baseline=b)
    assert twins.relative_error(ours, ref) <= TOL
    f, model, x, t = _case(seed, "mlp", "signed")
    ref = _captum(captum_attr.FeatureAblation, model, x, t)
    assert twins.relative_error(A.feature_ablation(f, x, t), ref) <= TOL


@pytest.mark.parametrize("seed", SEEDS)
def test_feature_ablation_with_a_mask_per_example(seed):
    # one mask per example (variable-length inputs), as Captum takes it: ids over the whole mask
    f, model, x, t = _case(seed, "mlp", "signed")
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 4, x.shape)
    ref = _captum(captum_attr.FeatureAblation, model, x, t, feature_mask=torch.tensor(mask))
    assert twins.relative_error(A.feature_ablation(f, x, t, feature_mask=mask), ref) <= TOL


@pytest.mark.parametrize("seed", SEEDS)
def test_grad_cam_and_layer_gradient_x_activation(seed):
    f, model, x, t = _case(seed, "cnn", "nonneg")
    ref = captum_attr.LayerGradCam(model, model.relu2).attribute(
        twins.to_torch(x), target=torch.tensor(t), relu_attributions=True)
    ours = A.grad_cam(f, x, t, site="relu_1", resize=False)
    assert twins.relative_error(ours, ref.detach().numpy()[:, 0]) <= TOL
    ref = captum_attr.LayerGradientXActivation(model, model.relu2).attribute(
        twins.to_torch(x), target=torch.tensor(t))
    ours = A.activation_x_gradient(f, x, t, site="relu_1")
    assert twins.relative_error(ours, twins.from_torch(ref)) <= TOL


@pytest.mark.parametrize("seed", SEEDS)
def test_neuron_attribution_matches_neuron_integrated_gradients(seed):
    f, model, x, _ = _case(seed, "cnn", "signed")
    neuron = (1, 2, 3)  # (h, w, c) of the second conv's ReLU, NHWC
    ref = captum_attr.NeuronIntegratedGradients(model, model.relu2).attribute(
        twins.to_torch(x), neuron_selector=(neuron[2], neuron[0], neuron[1]), n_steps=20)
    unit = int(np.ravel_multi_index(neuron, (4, 4, 6)))
    ours = A.integrated_gradients(A.site_output(f, "relu_1"), x, unit, steps=20)
    assert twins.relative_error(ours, twins.from_torch(ref)) <= TOL


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("baseline", ["zero", "random"])
def test_deeplift_max_pool_rule_is_captums(seed, baseline):
    """At the input of the CNN's last max pool (relu2's output) our attributions equal
    Captum's LayerDeepLift there: the same max-pool rule. Further back they part: on these
    nets Captum's input attributions miss f(x) - f(b) by up to 0.6-0.8 with random baselines,
    and ours sum to it (tests/attribution/test_properties.py)."""
    params = twins.cnn_params(seed)
    f, model = twins.cnn(params, last_pool="max"), twins.torch_cnn(params, last_pool="max")
    x = twins.inputs(seed, (4, 8, 8, 2), "signed")
    t = np.arange(4) % 5
    b = _baseline(baseline, x, seed)
    ref = twins.from_torch(captum_attr.LayerDeepLift(model, model.relu2).attribute(
        twins.to_torch(x), target=torch.tensor(t), baselines=twins.to_torch(b)))
    w, bias = params["dense"]

    def head(h):  # relu2's output -> logits
        pooled = twins._pool(h, "max")
        return pooled.reshape(h.shape[0], -1) @ w + bias

    relu2 = lambda z: jp.capture(f, "relu_1")(z)[1]["relu_1"]  # noqa: E731
    np.testing.assert_allclose(head(relu2(x)), f(x), rtol=1e-5, atol=1e-5)
    ours = A.deeplift(head, relu2(x), t, baseline=relu2(b))
    assert twins.relative_error(ours, ref) <= TOL


def _distribution(seed, shape, m=3):
    return (0.5 * np.random.default_rng(seed + 3).normal(size=(m,) + shape[1:])).astype(np.float32)


@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_deeplift_shap(net):
    """Captum's DeepLiftShap (DeepLift on every baseline, averaged); average pools as for
    DeepLift (at max pools Captum's rule breaks the summation, see the max-pool test)."""
    for seed, kind in ((0, "signed"), (1, "nonneg")):
        f, model, x, t = _case(seed, net, kind, pool="avg")
        b = _distribution(seed, x.shape)
        ref = _captum(captum_attr.DeepLiftShap, model, x, t, baselines=twins.to_torch(b))
        ours = A.deeplift_shap(f, x, t, baselines=b)
        assert twins.relative_error(ours, ref) <= TOL, (seed, kind)
        # the baselines are each used, not their mean
        mean = A.deeplift(f, x, t, baseline=b.mean(axis=0, keepdims=True))
        assert twins.relative_error(mean, ref) > 1e-2


@pytest.mark.parametrize("net", ["mlp", "cnn"])
@pytest.mark.parametrize("stdev", [0.0, 0.3])
def test_gradient_shap_on_the_same_draws(net, stdev, monkeypatch):
    """Captum's GradientShap is NoiseTunnel's mean of InputBaselineXGradient over noisy copies
    and drawn baselines; InputBaselineXGradient draws its alphas with ``np.random.uniform``.
    Fed our draws (noisy inputs, baselines, and, through that call, our alphas), Captum's
    arithmetic must give our attributions."""
    import jax
    import jax.numpy as jnp
    from captum.attr._core import gradient_shap as captum_gradient_shap
    from types import SimpleNamespace

    from jaxplain.attribution import _expected

    for seed, kind in ((0, "signed"), (1, "nonneg")):
        f, model, x, t = _case(seed, net, kind)
        b, samples, key = _distribution(seed, x.shape, m=4), 6, jax.random.key(seed)
        ours = A.gradient_shap(f, x, t, key=key, baselines=b, samples=samples, stdev=stdev)
        items = _expected.draws(key, samples, x.shape[0], b.shape[0], jnp.float32)
        noisy, base, _ = jax.vmap(lambda item: _expected.sample(
            jnp.asarray(x), jnp.asarray(b), jnp.float32(stdev), item))(items)
        flat = (-1,) + x.shape[1:]
        alphas = np.asarray(items[1], np.float64).reshape(-1)
        fake = SimpleNamespace(random=SimpleNamespace(uniform=lambda lo, hi, size: alphas[:size]))
        monkeypatch.setattr(captum_gradient_shap, "np", fake)
        per_draw = captum_gradient_shap.InputBaselineXGradient(model).attribute(
            twins.to_torch(np.asarray(noisy).reshape(flat)),
            baselines=twins.to_torch(np.asarray(base).reshape(flat)),
            target=torch.tensor(np.tile(t, samples)))
        monkeypatch.undo()
        ref = twins.from_torch(per_draw).reshape((samples,) + x.shape).mean(axis=0)
        assert twins.relative_error(ours, ref) <= TOL, (seed, kind)
        if stdev:  # Captum multiplies by noisy x - b, not x - b
            clean = A.gradient_shap(f, x, t, key=key, baselines=b, samples=samples)
            assert twins.relative_error(clean, ref) > 1e-2


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_guided_grad_cam(seed, interpolation):
    """Captum's GuidedGradCam at the second ReLU (4x4 maps, upsampled to 8x8) and at the
    first (8x8, no upsampling)."""
    f, model, x, t = _case(seed, "cnn", "nonneg")
    for layer, site in ((model.relu2, "relu_1"), (model.relu1, "relu")):
        ref = twins.from_torch(captum_attr.GuidedGradCam(model, layer).attribute(
            twins.to_torch(x), target=torch.tensor(t), interpolate_mode=interpolation))
        ours = A.guided_grad_cam(f, x, t, site=site, interpolation=interpolation)
        assert twins.relative_error(ours, ref) <= TOL, site
    other = {"nearest": "bilinear", "bilinear": "nearest"}[interpolation]
    ours = A.guided_grad_cam(f, x, t, site="relu_1", interpolation=other)
    ref = twins.from_torch(captum_attr.GuidedGradCam(model, model.relu2).attribute(
        twins.to_torch(x), target=torch.tensor(t), interpolate_mode=interpolation))
    assert twins.relative_error(ours, ref) > 1e-2  # the two upsamplings differ


@pytest.mark.parametrize("small,large", [((4, 4), (8, 8)), ((3, 5), (8, 7)), ((5, 3), (7, 11)),
                                         ((2, 6), (2, 6))])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_upsampling_is_torch_interpolate(small, large, mode):
    """Guided Grad-CAM's upsampling equals ``torch.nn.functional.interpolate`` (Captum's
    ``LayerAttribution.interpolate``) at integer and fractional scales."""
    from jaxplain.attribution._site import upsample

    cam = np.random.default_rng(0).normal(size=(2,) + small).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.tensor(cam)[:, None], size=large, mode=mode)
    np.testing.assert_allclose(upsample(cam, large, mode), ref.numpy()[:, 0], rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_layer_integrated_gradients(seed):
    f, model, x, t = _case(seed, "cnn", "signed")
    b = np.full(x.shape, 0.1, np.float32)
    ref = captum_attr.LayerIntegratedGradients(model, model.relu2).attribute(
        twins.to_torch(x), baselines=twins.to_torch(b), target=torch.tensor(t), n_steps=20)
    ours = A.layer_integrated_gradients(f, x, t, site="relu_1", baseline=b, steps=20,
                                        batch_size=7)
    assert twins.relative_error(ours, twins.from_torch(ref)) <= TOL


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_neuron_conductance(method):
    """Captum's NeuronConductance defaults to riemann_trapezoid; ours to gausslegendre."""
    f, model, x, t = _case(1, "cnn", "signed")
    b = np.full(x.shape, 0.1, np.float32)
    ref = captum_attr.NeuronConductance(model, model.relu2).attribute(
        twins.to_torch(x), neuron_selector=(3, 1, 2), baselines=twins.to_torch(b),
        target=torch.tensor(t), n_steps=20, method=method)
    ours = A.neuron_conductance(f, x, t, site="relu_1", neuron=(1, 2, 3), baseline=b, steps=20,
                                method=method)
    assert twins.relative_error(ours, twins.from_torch(ref)) <= TOL


@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_completeness_delta_over_a_baseline_distribution_is_captums_mean(net):
    """DeepLiftShap's convergence delta: Captum's n·m per-pair deltas (each example repeated
    over the m references), averaged per example, are ``completeness_delta(baselines=B)``; a
    check that can fail: with m = n, ``baseline=B`` pairs references with examples instead."""
    f, model, x, t = _case(0, net, "signed", pool="avg")
    b = _distribution(5, x.shape, m=len(x))
    attr = A.deeplift_shap(f, x, t, baselines=b)
    _, delta = captum_attr.DeepLiftShap(model).attribute(
        twins.to_torch(x), target=torch.tensor(t), baselines=twins.to_torch(b),
        return_convergence_delta=True)
    captums = delta.detach().numpy().reshape(len(x), len(b)).mean(axis=1)
    ours = np.asarray(A.completeness_delta(f, x, t, attr, baselines=b))
    gap = np.asarray(A.completeness_delta(f, x, t, np.zeros_like(x), baselines=b))
    np.testing.assert_allclose(ours, captums, atol=1e-5 * np.abs(gap).max())
    paired = np.asarray(A.completeness_delta(f, x, t, attr, baseline=b))
    assert np.abs(paired - captums).max() > 1e-2
    with pytest.raises(ValueError, match="not both"):
        A.completeness_delta(f, x, t, attr, baseline=0.0, baselines=b)
