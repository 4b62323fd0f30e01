"""Clear errors for arguments the audit found reported as internal failures: a metrics
spelling of `baseline`, a glob of several sites given to `site_output`, and one example
without its batch axis."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A
from tests.attribution.test_registry import F, SUPERPIXELS, T, X

BASELINE_METHODS = {
    "integrated_gradients": (A.integrated_gradients, {"steps": 4}),
    "occlusion": (A.occlusion, {"window": (4, 4), "stride": 4}),
    "feature_ablation": (A.feature_ablation, {"feature_mask": SUPERPIXELS}),
    "deeplift": (A.deeplift, {}),
    "layer_conductance": (A.layer_conductance, {"site": "relu_1", "steps": 3}),
}


@pytest.mark.parametrize("name", sorted(BASELINE_METHODS))
@pytest.mark.parametrize("spelling", ["zeros", "mean", "blur"])
def test_metrics_spelling_of_baseline_is_refused_naming_it(name, spelling):
    method, opts = BASELINE_METHODS[name]
    with pytest.raises(ValueError, match=r"baseline must be None \(zeros\), a number, or an array "
                                         r"broadcastable to x's shape \(4, 8, 8, 2\); got the "
                                         rf"string '{spelling}'.*metrics' spellings"):
        method(F, X, T, baseline=spelling, **opts)


def test_non_numeric_baseline_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match=r"baseline must be None \(zeros\), a number.*got dict"):
        A.occlusion(F, X, T, window=(4, 4), stride=4, baseline={"value": 0.0})


@pytest.mark.parametrize("name", sorted(BASELINE_METHODS))
def test_the_spellings_taken_mean_the_same_zeros(name):
    method, opts = BASELINE_METHODS[name]
    zeros = np.asarray(method(F, X, T, baseline=None, **opts))
    np.testing.assert_allclose(method(F, X, T, baseline=0.0, **opts), zeros, rtol=1e-6)
    np.testing.assert_allclose(method(F, X, T, baseline=jnp.zeros(X.shape[1:]), **opts), zeros,
                               rtol=1e-6)


def test_site_output_glob_of_several_sites_lists_them():
    with pytest.raises(ValueError, match=r"site 'relu\*' matches 2 sites \(relu, relu_1\), but "
                                         "one is read here"):
        A.gradient(A.site_output(F, "relu*", reduce="sum"), X, 0)


def test_site_output_glob_of_one_site_is_that_site():
    by_glob = A.gradient(A.site_output(F, "relu_*", reduce="sum"), X, 1)
    np.testing.assert_array_equal(by_glob, A.gradient(A.site_output(F, "relu_1", reduce="sum"),
                                                      X, 1))


def test_one_example_without_batch_axis_says_x_none():
    with pytest.raises(ValueError, match=r"could not be evaluated on an input of shape "
                                         r"\(8, 8, 2\).*x looks like one example without its "
                                         r"batch axis; pass x\[None\]"):
        A.gradient(F, X[0], 0)
    np.testing.assert_allclose(A.gradient(F, X[0][None], T[0]), A.gradient(F, X, T)[:1],
                               rtol=1e-6)


def test_other_shape_failures_get_no_batch_axis_hint():
    with pytest.raises(ValueError, match="could not be evaluated") as info:
        A.gradient(F, X[..., :1], T)  # one channel of two: no batch axis is missing
    assert "x[None]" not in str(info.value)


def test_dense_model_on_one_example_says_x_none_and_a_regression_does_not():
    w = jnp.arange(12.0).reshape(4, 3) / 10
    dense = lambda x: x @ w  # noqa: E731 - runs on one example (4,) too, giving (3,)
    with pytest.raises(ValueError, match=r"got an output of shape \(3,\) \(f maps a batch of "
                                         r"shape \(1, 4\) to logits \(1, 3\).*pass x\[None\]\)"):
        A.gradient(dense, jnp.ones(4), 0)
    with pytest.raises(ValueError, match=r"got an output of shape \(2,\)\. For one output per "
                                         r"example \(a regression\)") as info:
        A.gradient(lambda x: x @ w[:, 0], jnp.ones((2, 4)), 0)
    assert "x[None]" not in str(info.value)
