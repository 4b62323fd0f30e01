"""Every attribution method and the main metrics under JAX's strict configurations.

``jax.numpy_rank_promotion("raise")`` and ``jax.numpy_dtype_promotion("strict")`` must not
trip on jaxplain's own arithmetic (the models here broadcast explicitly and never mix dtypes),
and must give the default results. Both are set at once (a broadcast raises a ValueError, a
promotion a TypePromotionError); the context is part of jit's cache key, so it traces afresh.
"""

import contextlib
import io
import pathlib
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A
from jaxplain import metrics as M
from jaxplain.lrp import Epsilon, EpsilonPlusFlat
from tests._strict import strict_promotion

KEY = jax.random.key(0)


_r = np.random.default_rng(0)
_K1 = jnp.asarray(_r.normal(0, 0.5, (3, 3, 2, 4)), jnp.float32)
_B1 = jnp.asarray(_r.normal(0, 0.1, (1, 1, 1, 4)), jnp.float32)
_K2 = jnp.asarray(_r.normal(0, 0.3, (3, 3, 4, 6)), jnp.float32)
_W = jnp.asarray(_r.normal(0, 0.3, (6, 5)), jnp.float32)
_W1 = jnp.asarray(_r.normal(0, 0.4, (10, 12)), jnp.float32)
_B = jnp.asarray(_r.normal(0, 0.1, (1, 12)), jnp.float32)
_W2 = jnp.asarray(_r.normal(0, 0.4, (12, 4)), jnp.float32)


def _conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def cnn(x):
    """(n, 8, 8, 2) -> (n, 5); rank- and dtype-clean."""
    h = jax.nn.relu(_conv(x, _K1) + _B1)
    h = jax.nn.relu(_conv(h, _K2))
    return h.mean(axis=(1, 2)) @ _W


def mlp(x):
    """(n, 10) -> (n, 4)."""
    return jnp.tanh(x @ _W1 + _B) @ _W2


X = jnp.asarray(_r.uniform(0, 1, (3, 8, 8, 2)), jnp.float32)
XM = jnp.asarray(_r.uniform(0, 1, (3, 10)), jnp.float32)
T = jnp.array([0, 1, 2])
MASK = jnp.asarray((np.arange(8)[:, None] // 4 * 2 + np.arange(8)[None, :] // 4)[:, :, None])
MASKS = jnp.broadcast_to(MASK, X.shape) % jnp.array([4, 3, 2])[:, None, None, None]  # per example
BASELINES = 0.5 * X

ATTRIBUTIONS = {
    "gradient": (A.gradient, {}),
    "gradient_x_input": (A.gradient_x_input, {}),
    "integrated_gradients": (A.integrated_gradients, {"steps": 4, "baseline": 0.1}),
    "smoothgrad": (A.smoothgrad, {"key": KEY, "samples": 3}),
    "vargrad": (A.smoothgrad, {"key": KEY, "samples": 3, "kind": "vargrad"}),
    "deeplift": (A.deeplift, {"baseline": 0.2}),
    "deeplift_shap": (A.deeplift_shap, {"baselines": BASELINES}),
    "gradient_shap": (A.gradient_shap, {"key": KEY, "baselines": BASELINES, "samples": 3,
                                        "stdev": 0.1}),
    "guided_backprop": (A.guided_backprop, {}),
    "deconvnet": (A.deconvnet, {}),
    "lrp": (A.lrp, {"rules": EpsilonPlusFlat()}),
    "conservative_propagation": (A.conservative_propagation, {}),
    "attn_lrp": (A.attn_lrp, {}),
    "occlusion": (A.occlusion, {"window": (3, 3), "stride": 2}),
    "feature_ablation": (A.feature_ablation, {"feature_mask": MASK}),
    "shapley_sampling": (A.shapley_sampling, {"key": KEY, "samples": 2, "feature_mask": MASK}),
    "feature_ablation_per_example": (A.feature_ablation, {"feature_mask": MASKS}),
    "kernel_shap": (A.kernel_shap, {"feature_mask": MASK}),
    "kernel_shap_per_example": (A.kernel_shap, {"key": KEY, "samples": 6, "feature_mask": MASKS}),
    "lime_per_example": (A.lime, {"key": KEY, "samples": 12, "feature_mask": MASKS}),
    "shapley_per_example": (A.shapley_sampling, {"key": KEY, "samples": 2,
                                                 "feature_mask": MASKS}),
    "kernel_shap_sampled": (A.kernel_shap, {"key": KEY, "samples": 12, "feature_mask": MASK}),
    "lime": (A.lime, {"key": KEY, "samples": 12, "feature_mask": MASK}),
    "grad_cam": (A.grad_cam, {"site": "relu_1"}),
    "guided_grad_cam": (A.guided_grad_cam, {"site": "relu_1"}),
    "grad_cam_plus_plus": (A.grad_cam_plus_plus, {"site": "relu_1"}),
    "score_cam": (A.score_cam, {"site": "relu_1"}),
    "activation_x_gradient": (A.activation_x_gradient, {"site": "relu_1"}),
    "layer_conductance": (A.layer_conductance, {"site": "relu_1", "steps": 3}),
    "layer_integrated_gradients": (A.layer_integrated_gradients, {"site": "relu_1", "steps": 3}),
    "neuron_conductance": (A.neuron_conductance, {"site": "relu_1", "neuron": 5, "steps": 3}),
    "mlp_gradient": (A.gradient, {}),
    "mlp_lrp": (A.lrp, {"rules": Epsilon()}),
    "mlp_occlusion": (A.occlusion, {"window": (2,), "stride": 2}),
    "mlp_kernel_shap": (A.kernel_shap, {"key": KEY, "samples": 16}),
    "mlp_lime": (A.lime, {"key": KEY, "samples": 16}),
    "mlp_smoothgrad": (A.smoothgrad, {"key": KEY, "samples": 3}),
}


def _explain(name):
    method, opts = ATTRIBUTIONS[name]
    f, x = (mlp, XM) if name.startswith("mlp_") else (cnn, X)
    return method(f, x, T, **opts)


def _grad(f, x, t):
    return jax.grad(lambda x: f(x)[jnp.arange(x.shape[0]), t].sum())(x)


def _randomization():
    model = eqx.nn.MLP(10, 4, 8, 1, key=jax.random.key(3))
    r = M.randomization_check(model, None, XM, A.gradient, key=KEY, target=T, stdev=0.1)
    return r.spearman


def _compare():
    table = M.compare(cnn, X, T, {"gradient": A.gradient}, ("deletion_morf", "insertion",
                      "lerf_change", "sparseness", "continuity", "max_sensitivity"),
                      key=KEY, steps=4, samples=2)
    return jnp.asarray(table.rows[0][1:])


A_CNN, A_MLP = _grad(cnn, X, T), _grad(mlp, XM, T)
METRICS = {
    "deletion": lambda: M.deletion(cnn, X, T, A_CNN, steps=4).values,
    "deletion_mlp": lambda: M.deletion(mlp, XM, T, A_MLP, steps=4).values,
    "insertion": lambda: M.insertion(cnn, X, T, A_CNN, steps=4).values,
    "pixel_perturbation": lambda: M.pixel_perturbation(cnn, X, A_CNN, target=T),
    "max_sensitivity": lambda: M.max_sensitivity(cnn, X, T, A.gradient, key=KEY, samples=2),
    "continuity": lambda: M.continuity(mlp, XM, T, A.gradient, key=KEY, samples=2),
    "faithfulness_correlation": lambda: M.faithfulness_correlation(
        mlp, XM, T, A_MLP, key=KEY, subset_size=3, samples=4),
    "monotonicity": lambda: M.monotonicity(cnn, X, T, A_CNN, steps=4),
    "infidelity": lambda: M.infidelity(mlp, XM, T, A_MLP, key=KEY, samples=4),
    "irof": lambda: M.irof(cnn, X, T, A_CNN, MASK[..., 0], baseline="zeros"),
    "randomization_check": _randomization,
    "compare": _compare,
}

_DEFAULTS = {}


def _default(name, run):
    if name not in _DEFAULTS:
        _DEFAULTS[name] = np.asarray(run())
    return _DEFAULTS[name]


@pytest.mark.parametrize("name", sorted(ATTRIBUTIONS))
def test_attribution_under_strict_configs(name):
    expected = _default(name, lambda: _explain(name))
    with strict_promotion():
        got = np.asarray(_explain(name))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metric_under_strict_configs(name):
    expected = _default(name, METRICS[name])
    with strict_promotion():
        got = np.asarray(METRICS[name]())
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_readme_tour_runs_under_strict_dtype_promotion():
    # its Guided rule was g * (x > 0) * (g > 0): bool x float, refused by strict promotion
    root = pathlib.Path(__file__).resolve().parents[2]
    tour = re.findall(r"```python\n(.*?)```", (root / "README.md").read_text(), flags=re.S)[0]
    runs = []
    for config in (contextlib.nullcontext, lambda: jax.numpy_dtype_promotion("strict")):
        namespace: dict = {}
        with config(), contextlib.redirect_stdout(io.StringIO()):
            exec(compile(tour, "README.md", "exec"), namespace)  # noqa: S102
        runs.append(np.asarray(namespace["guided"]))
    np.testing.assert_array_equal(runs[1], runs[0])
    assert (runs[0] != 0).any()
