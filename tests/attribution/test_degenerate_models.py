"""Degenerate models and inputs: a target output that is NaN in some examples makes exactly
those examples' gradient maps NaN (a ReLU's backward would zero the NaN and give a finite,
plausible map); VarGrad is a float64-accurate variance that overflows to inf, never NaN; an
empty batch gives an empty map."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A

RNG = np.random.default_rng(0)
W1 = jnp.asarray(RNG.normal(size=(6, 8)), jnp.float32)
B1 = jnp.asarray(RNG.normal(size=(8,)) * 0.1, jnp.float32)
W2 = jnp.asarray(RNG.normal(size=(8, 3)), jnp.float32)
# feature 0 is +10 in the examples whose hidden bias is NaN, -10 elsewhere: its sign stays on
# every path from a zero baseline and under small noise
BAD = np.array([False, True, False, True])
X = np.asarray(RNG.normal(size=(4, 6)), np.float32)
X[:, 0] = np.where(BAD, 10.0, -10.0)
X = jnp.asarray(X)
T = jnp.array([0, 1, 2, 0])
KEY = jax.random.key(0)


def _mlp(x, nan_bias=True):
    bias = jnp.where(x[:, :1] > 0, jnp.nan, B1) if nan_bias else B1
    with jax.named_scope("hidden"):
        h = jax.nn.relu(x @ W1 + bias)
    return h @ W2


def nan_mlp(x):
    return _mlp(x)


def clean_mlp(x):  # nan_mlp in the examples whose feature 0 is negative
    return _mlp(x, nan_bias=False)


K1 = jnp.asarray(RNG.normal(size=(3, 3, 1, 4)) * 0.5, jnp.float32)
K2 = jnp.asarray(RNG.normal(size=(3, 3, 4, 4)) * 0.3, jnp.float32)
C2 = jnp.asarray(RNG.normal(size=(4,)) * 0.1, jnp.float32)
WD = jnp.asarray(RNG.normal(size=(4, 3)), jnp.float32)
IMAGES = np.asarray(RNG.uniform(size=(4, 6, 6, 1)), np.float32)
IMAGES[:, 0, 0, 0] = np.where(BAD, 1.0, 0.0)  # the second conv's bias is NaN where this is > .5
IMAGES = jnp.asarray(IMAGES)


def _cnn(x, nan_bias=True):
    conv = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1),
                             padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    with jax.named_scope("conv1"):
        h = jax.nn.relu(conv(x, K1))
    bias = jnp.where(x[:, :1, :1, :1] > 0.5, jnp.nan, C2) if nan_bias else C2
    with jax.named_scope("conv2"):
        h = jax.nn.relu(conv(h, K2) + bias)
    return h.mean(axis=(1, 2)) @ WD


def nan_cnn(x):
    return _cnn(x)


def clean_cnn(x):
    return _cnn(x, nan_bias=False)


GRADIENT_FAMILY = {
    "gradient": A.gradient,
    "gradient_x_input": A.gradient_x_input,
    "guided_backprop": A.guided_backprop,
    "deconvnet": A.deconvnet,
    "integrated_gradients": functools.partial(A.integrated_gradients, steps=8),
    "integrated_gradients_chunked": functools.partial(A.integrated_gradients, steps=8,
                                                      batch_size=3),
    "smoothgrad": functools.partial(A.smoothgrad, key=KEY, samples=6, stdev=0.05),
    "vargrad": functools.partial(A.smoothgrad, key=KEY, samples=6, stdev=0.05,
                                 kind="vargrad", batch_size=4),
    "gradient_shap": functools.partial(A.gradient_shap, key=KEY, samples=4,
                                       baselines=jnp.zeros((2, 6))),
    "deeplift": A.deeplift,
}
SITE_METHODS = {
    "activation_x_gradient": functools.partial(A.activation_x_gradient, site="hidden"),
    "layer_conductance": functools.partial(A.layer_conductance, site="hidden", steps=8),
    "layer_integrated_gradients": functools.partial(A.layer_integrated_gradients,
                                                    site="hidden", steps=8),
    "neuron_conductance": functools.partial(A.neuron_conductance, site="hidden", neuron=2,
                                            steps=8),
}


def _assert_nan_exactly_in_bad_rows(out, reference):
    out, reference = np.asarray(out), np.asarray(reference)
    assert np.isnan(out[BAD]).all()
    np.testing.assert_allclose(out[~BAD], reference[~BAD], rtol=1e-5, atol=1e-6)
    assert np.isfinite(out[~BAD]).all()


@pytest.mark.parametrize("name", sorted(GRADIENT_FAMILY))
def test_a_non_finite_target_makes_exactly_its_examples_maps_nan(name):
    method = GRADIENT_FAMILY[name]
    _assert_nan_exactly_in_bad_rows(method(nan_mlp, X, T), method(clean_mlp, X, T))


@pytest.mark.parametrize("name", sorted(SITE_METHODS))
def test_site_methods_make_the_examples_of_a_non_finite_target_nan(name):
    method = SITE_METHODS[name]
    _assert_nan_exactly_in_bad_rows(method(nan_mlp, X, T), method(clean_mlp, X, T))


@pytest.mark.parametrize("method", [
    functools.partial(A.layer_integrated_gradients, site="conv2", steps=8),
    # conv1 is an affine stem; batch_size=1 keeps the tail's batch at 4: XLA:CPU compiles
    # nan_cnn itself at a batch of 32 into a program whose ReLU drops the NaN (finite logits)
    functools.partial(A.integrated_gradients, steps=8, batch_size=1),
    A.gradient,
])
def test_a_nan_conv_bias_makes_its_examples_maps_nan(method):
    _assert_nan_exactly_in_bad_rows(method(nan_cnn, IMAGES, T), method(clean_cnn, IMAGES, T))


def test_the_nan_maps_jit_vmap_and_differentiate():
    eager = A.gradient(nan_mlp, X, T)
    np.testing.assert_array_equal(jax.jit(lambda x: A.gradient(nan_mlp, x, T))(X), eager)
    stacked = jax.vmap(lambda x: A.gradient(nan_mlp, x, T))(jnp.stack([X, X]))
    np.testing.assert_array_equal(stacked[1], eager)

    def loss(x, keep):  # through the where: the clean examples' second derivative
        return jnp.where(keep[:, None], A.gradient_x_input(nan_mlp, x, T), 0.0).sum()

    keep = jnp.asarray(~BAD)
    got = jax.grad(loss)(X, keep)
    want = jax.grad(lambda x: jnp.where(keep[:, None], A.gradient_x_input(clean_mlp, x, T),
                                        0.0).sum())(X)
    np.testing.assert_allclose(got[~BAD], want[~BAD], rtol=1e-5, atol=1e-6)


# VarGrad of a quadratic model, whose gradient c_t + q_t * x is linear in x: the noisy
# gradients in float64, and their variance, follow from the same draws.
D = 5


def _quadratic(q, c):
    q, c = jnp.asarray(q, jnp.float32), jnp.asarray(c, jnp.float32)

    def f(x):  # (n, D) -> (n, 2): f_k = sum_j c_kj x_j + q_kj x_j^2 / 2
        return x @ c.T + 0.5 * (x * x) @ q.T

    return f


def _noisy_gradients(x, q, c, target, samples, stdev):
    """(samples, n, D) float64: the gradients ``c_t + q_t * x`` at smoothgrad's noisy copies
    (its draws)."""
    x = jnp.asarray(x, jnp.float32)
    sigma = jnp.float32(stdev) * (x.max(axis=1, keepdims=True) - x.min(axis=1, keepdims=True))
    noisy = np.stack([np.asarray(x + sigma * jax.random.normal(k, x.shape, jnp.float32))
                      for k in jax.random.split(KEY, samples)]).astype(np.float64)
    t = np.asarray(target)
    return np.asarray(c, np.float64)[t] + np.asarray(q, np.float64)[t] * noisy


@pytest.mark.parametrize("batch_size", [None, 4])
@pytest.mark.parametrize("method", [A.gradient, functools.partial(A.gradient)],
                         ids=["folded", "vmapped"])
def test_vargrad_matches_a_float64_variance_when_the_mean_dwarfs_the_spread(batch_size, method):
    q = np.array([[1.0, 2.0, -1.0, 0.5, 3.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    c = np.full((2, D), 1e4)  # |mean| = 1e4 * std: E[a^2] - E[a]^2 is float32 noise
    x = RNG.normal(size=(3, D)).astype(np.float32)
    t = jnp.array([0, 1, 0])
    out = A.smoothgrad(_quadratic(q, c), x, t, key=KEY, samples=10, stdev=0.1,
                       kind="vargrad", method=method, batch_size=batch_size)
    ref = _noisy_gradients(x, q, c, t, 10, 0.1).var(axis=0)
    # f's float32 gradients are off by an ulp of 1e4 each: the variance by about 2 std ulp
    ulp = 2 * float(np.spacing(np.float32(1e4)))
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=2 * np.sqrt(ref.max()) * ulp)
    assert np.abs(np.asarray(out) - ref).max() < 1e-3 * ref.max()


def test_vargrad_overflows_to_inf_not_nan_and_keeps_finite_variances():
    scale = np.array([1e17, 1e18, 3e18, 1e19, 1e21])  # variances from ~1e33 to ~1e42
    q = np.stack([scale, scale])
    c = np.zeros((2, D))
    x = np.random.default_rng(1).normal(size=(2, D)).astype(np.float32)
    t = jnp.array([0, 1])
    out = np.asarray(A.smoothgrad(_quadratic(q, c), x, t, key=KEY, samples=8, stdev=0.5,
                                  kind="vargrad", batch_size=3))
    ref = _noisy_gradients(x, q, c, t, 8, 0.5).var(axis=0)
    top = float(np.finfo(np.float32).max)
    big = ref > 1.01 * top
    assert not np.isnan(out).any()
    assert np.isinf(out[big]).all() and big.any()
    small = ref < 0.99 * top
    assert small.any()
    np.testing.assert_allclose(out[small], ref[small], rtol=1e-3)


def test_an_empty_batch_gives_an_empty_map_as_every_method():
    f = _quadratic(np.ones((2, D)), np.ones((2, D)))
    x, t = jnp.zeros((0, D)), jnp.zeros((0,), jnp.int32)
    assert A.gradient(f, x, t).shape == (0, D)
    out = A.gradient_shap(f, x, t, key=KEY, baselines=jnp.zeros((2, D)), samples=4)
    assert out.shape == (0, D) and out.dtype == x.dtype
    out = A.gradient_shap(f, x, t, key=KEY, baselines=jnp.zeros((2, D)), samples=4, stdev=0.1,
                          batch_size=3)
    assert out.shape == (0, D)
