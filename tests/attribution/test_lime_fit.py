"""LIME's surrogate fit: the weighted ridge with a free intercept, solved on the smaller side
(``samples x samples`` when there are fewer samples than groups), against its float64 closed
form; and its memory at per-element groups of an image."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain.attribution import _surrogate, kernel_shap, lime
from jaxplain.attribution._surrogate import _lime_fit


def _coalitions(samples, groups, seed=0):
    z = np.random.default_rng(seed).random((samples, groups)) < 0.5
    z[0] = True  # the input itself, as lime draws
    return z.astype(np.float32)


def _closed_form(z, y, kernel_width, ridge):
    """float64 ``argmin_{c, beta} sum_i k_i (y_i - c - z_i beta)^2 + ridge |beta|^2`` from the
    ``G + 1`` normal equations, the intercept unpenalised."""
    z, y = z.astype(np.float64), y.astype(np.float64)
    k = np.exp(-(1.0 - np.sqrt(z.sum(1) / z.shape[1])) ** 2 / kernel_width ** 2)
    d = np.concatenate([np.ones((len(z), 1)), z], axis=1)
    penalty = ridge * np.diag(np.r_[0.0, np.ones(z.shape[1])])
    theta = np.linalg.solve(d.T @ (k[:, None] * d) + penalty, d.T @ (k[:, None] * y))
    return theta[1:]


def _fit(z, y, kernel_width, ridge):
    fit = jax.jit(lambda z, y: _lime_fit(z, y, jnp.float32(z.shape[1]), jnp.float32(kernel_width),
                                         jnp.float32(ridge)))
    return np.asarray(fit(jnp.asarray(z), jnp.asarray(y)), np.float64)


@pytest.mark.parametrize("samples,groups", [(40, 150), (150, 40)], ids=["dual", "primal"])
@pytest.mark.parametrize("ridge", [1e-3, 0.5])
@pytest.mark.parametrize("kernel_width", [0.25, 0.6])
def test_fit_equals_the_float64_closed_form(samples, groups, ridge, kernel_width):
    z = _coalitions(samples, groups)
    y = np.random.default_rng(1).normal(size=(samples, 2)).astype(np.float32) + 3.0
    want = _closed_form(z, y, kernel_width, ridge)
    got = _fit(z, y, kernel_width, ridge)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_ridge_zero_with_fewer_samples_than_groups_is_the_least_norm_exact_fit():
    z = _coalitions(30, 90)
    y = np.random.default_rng(2).normal(size=(30, 1)).astype(np.float32)
    got = _fit(z, y, 0.25, 0.0)
    # ridge -> 0 limit of the closed form: the least |beta| among exact fits, the intercept free
    want = _closed_form(z, y, 0.25, 1e-9)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    residual = y[:, 0] - z @ got[:, 0]
    np.testing.assert_allclose(residual, residual.mean(), atol=1e-4)  # every sample fitted
    # a constant added to the model moves the intercept only
    np.testing.assert_allclose(_fit(z, y + 10.0, 0.25, 0.0), got, atol=1e-5)


def test_ridge_zero_gives_groups_never_switched_nothing():
    z = _coalitions(60, 8)
    z[:, 5:] = 0.0  # slots past an example's own groups, as with a mask per example
    y = z[:, :5] @ np.array([[1.0], [-2.0], [0.5], [3.0], [0.0]], np.float32) + 0.7
    got = _fit(z, y, 0.25, 0.0)
    np.testing.assert_allclose(got[5:], 0.0, atol=1e-6)
    np.testing.assert_allclose(got[:5, 0], [1.0, -2.0, 0.5, 3.0, 0.0], atol=1e-5)


def test_per_element_groups_of_an_image_fit_in_little_memory():
    hw, samples = 32, 200
    groups = hw * hw * 3
    f = lambda x: x.reshape(len(x), -1) @ jnp.zeros((groups, 10))  # noqa: E731
    x = jnp.zeros((1, hw, hw, 3))
    mask = jnp.asarray(np.arange(groups, dtype=np.int32).reshape(hw, hw, 3))
    compiled = _surrogate._lime.lower(
        f, x, jnp.zeros((1,), jnp.int32), x, mask, jax.random.key(0), jnp.ones((1, groups), bool),
        jnp.float32(0.25), jnp.float32(1e-3), samples=samples, batch_size=None).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        pytest.skip("no memory analysis on this backend")
    # the samples' inputs are 2.4 MiB; a (samples + G) x (G + 1) least squares was 113 MiB
    assert analysis.temp_size_in_bytes < 20 * 2 ** 20


def test_a_kernel_width_of_zero_is_refused_not_a_nan_fit():
    """exp(-d^2 / 0^2) weighs the all-on coalition 0/0: NaN weights, refused by name."""
    x = jnp.ones((1, 4))
    for width in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match=r"kernel_width must be a float > 0"):
            lime(lambda v: v @ jnp.ones((4, 2)), x, 0, key=jax.random.key(0), kernel_width=width)


def test_ridge_zero_recovers_a_linear_model_whose_group_is_off_only_in_a_light_coalition():
    """Group 1 is off only in the all-off coalition (kernel weight 1.1e-7): its direction is
    weak but determined, and an unregularised fit must keep it (lstsq's cut-off, not the square
    root of it that an eigendecomposition of the Gram matrix gave: it returned 0 for 2)."""
    w = jnp.array([1.0, 2.0, -1.0, 0.5, 3.0])
    beta = lime(lambda v: (v @ w)[:, None], jnp.ones((1, 5)), 0, key=jax.random.key(49),
                samples=10, ridge=0.0)
    np.testing.assert_allclose(beta[0], w, rtol=1e-3)


def test_a_model_closing_over_numpy_bfloat16_weights_runs_on_the_first_call():
    """The changed-weights digest read a NumPy bfloat16 array's buffer, which ml_dtypes does
    not export: the first call failed as 'could not be evaluated', the second ran."""
    w = np.ones((6, 3), np.float32).astype(jnp.bfloat16)
    x = jnp.ones((2, 6), jnp.bfloat16)
    first = kernel_shap(lambda v: jnp.tanh(v @ w), x, 1)
    np.testing.assert_array_equal(first, kernel_shap(lambda v: jnp.tanh(v @ w), x, 1))
