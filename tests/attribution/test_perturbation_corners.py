"""Corners of the perturbation methods: an underdetermined KernelSHAP draw warns, occlusion's
window arguments and short windows without a convolution, a non-finite target in Shapley
sampling, and boolean inputs."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A

G = 8
LINEAR_W = jnp.arange(1.0, G + 1)


def linear(x):
    return (x @ LINEAR_W)[:, None]


def _recorded(call):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = call()
    return out, [str(r.message) for r in rec if issubclass(r.category, UserWarning)]


def test_kernel_shap_warns_exactly_when_the_sampled_fit_is_underdetermined():
    # a linear model's Shapley values are w_i x_i: any determined fit recovers them exactly
    x = jnp.ones((1, G))
    outcomes = []
    for seed in range(8):
        got, messages = _recorded(lambda: A.kernel_shap(linear, x, 0, samples=G,
                                                        key=jax.random.key(seed)))
        wrong = np.abs(np.asarray(got)[0] - np.asarray(LINEAR_W)).max() > 1e-3
        warned = any("underdetermined" in m for m in messages)
        assert wrong == warned, (seed, messages)
        outcomes.append(warned)
    assert any(outcomes) and not all(outcomes)  # both kinds of draw were seen


def test_kernel_shap_underdetermined_warning_says_what_to_pass():
    key = jax.random.key(0)  # a rank-deficient draw at samples=G
    _, messages = _recorded(lambda: A.kernel_shap(linear, jnp.ones((1, G)), 0, samples=G,
                                                  key=key))
    assert any(f"samples >= {3 * G}" in m and "samples=None" in m for m in messages)
    # a concrete key closed over by the user's jit: the coalitions are still checked
    _, messages = _recorded(lambda: jax.jit(
        lambda x: A.kernel_shap(linear, x, 0, samples=G, key=key))(jnp.ones((1, G))))
    assert any("underdetermined" in m for m in messages)
    # a traced key (vmapped over keys) cannot be checked, and runs
    keys = jax.random.split(key, 2)
    out = jax.vmap(lambda k: A.kernel_shap(linear, jnp.ones((1, G)), 0, samples=G, key=k))(keys)
    assert out.shape == (2, 1, G)


def test_kernel_shap_per_example_masks_warn_for_the_examples_short_of_rank():
    x = jnp.ones((3, G))
    mask = jnp.stack([jnp.arange(G), jnp.arange(G) // 4, jnp.arange(G)])  # 8, 2, 8 groups
    got, messages = _recorded(lambda: A.kernel_shap(linear, x, 0, samples=G,
                                                    key=jax.random.key(0), feature_mask=mask))
    assert any("the 2 of 3 examples with 8 groups" in m for m in messages), messages
    # the example of 2 groups enumerates its coalitions: exact, 10 and 26 on its members
    np.testing.assert_allclose(np.asarray(got)[1], [10.0] * 4 + [26.0] * 4, rtol=1e-5)


def test_kernel_shap_with_enough_samples_does_not_warn_and_is_exact_on_a_linear_model():
    got, messages = _recorded(lambda: A.kernel_shap(linear, jnp.ones((1, G)), 0, samples=3 * G,
                                                    key=jax.random.key(0)))
    assert not [m for m in messages if "underdetermined" in m]
    np.testing.assert_allclose(np.asarray(got)[0], LINEAR_W, rtol=1e-4)


@pytest.mark.parametrize("options, name", [
    (dict(window=2.0), "window"), (dict(window=None), "window"),
    (dict(window=np.float32(2)), "window"), (dict(window=2, stride=2.0), "stride")])
def test_occlusion_refuses_a_window_that_is_not_ints_naming_it(options, name):
    f = lambda z: z @ jnp.ones((4, 2))  # noqa: E731
    with pytest.raises(ValueError, match=f"{name} must be a positive int or a tuple"):
        A.occlusion(f, jnp.ones((3, 4)), 0, **options)


C, H, W_ = 3, 4, 4
IMAGE_W = jax.random.normal(jax.random.key(0), (C * H * W_, 2))
NCHW = jax.random.normal(jax.random.key(1), (1, C, H, W_))


def flat_mlp(x):
    return x.reshape(x.shape[0], -1) @ IMAGE_W


def test_a_short_window_without_a_convolution_warns_and_sizes_the_leading_axes():
    got, messages = _recorded(lambda: A.occlusion(flat_mlp, NCHW, 0, window=(2, 2),
                                                  stride=(2, 2)))
    assert any("no convolution" in m and "(C, h, w) on NCHW" in m for m in messages), messages
    leading = A.occlusion(flat_mlp, NCHW, 0, window=(2, 2, W_), stride=(2, 2, 1))
    np.testing.assert_allclose(got, leading, rtol=1e-6)


def test_windows_that_say_every_axis_do_not_warn():
    def conv(x):  # NCHW, first convolution reads channels on axis 1
        k = jnp.ones((2, C, 3, 3)) / 9.0
        h = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME")
        return h.reshape(len(x), -1)[:, :2]

    emb = jax.random.normal(jax.random.key(2), (2, 6, 5))  # tokens (n, L, D): (1,) is one token
    calls = [lambda: A.occlusion(flat_mlp, NCHW, 0, window=(C, 2, 2), stride=(1, 2, 2)),
             lambda: A.occlusion(flat_mlp, NCHW, 0, window=2, stride=2),
             lambda: A.occlusion(conv, NCHW, 0, window=(2, 2), stride=(2, 2)),
             lambda: A.occlusion(lambda e: e.sum(1)[:, :2], emb, 0, window=(1,))]
    for call in calls:
        _, messages = _recorded(call)
        assert not [m for m in messages if "no convolution" in m]


def test_shapley_sampling_is_nan_where_the_target_is_not_finite_as_its_peers():
    f = lambda z: jnp.concatenate([jnp.exp(100 * z[:, :1]) + z[:, 1:2], z[:, 1:2]], 1)  # noqa: E731
    x = jnp.array([[1.0, 0.5, -0.3], [-1.0, 0.5, -0.3]])  # exp(100) overflows; exp(-100) not
    got = np.asarray(A.shapley_sampling(f, x, 0, key=jax.random.key(0), samples=8))
    peer = np.asarray(A.kernel_shap(f, x, 0))
    assert np.isnan(got[0]).all() and np.isnan(peer[0]).all()
    assert np.isfinite(got[1]).all()
    np.testing.assert_allclose(got[1].sum(), float(f(x)[1, 0] - f(jnp.zeros((1, 3)))[0, 0]),
                               rtol=1e-5)


def test_boolean_x_is_refused_with_advice_that_works():
    g = lambda z: z.astype(jnp.float32) @ jnp.array([[1.0], [2.0], [-1.0]])  # noqa: E731
    flags = jnp.array([[True, False, True]])
    with pytest.raises(TypeError, match=r"x.astype\(jnp.int32\)") as err:
        A.kernel_shap(g, flags, 0)
    assert "/ 255" not in str(err.value)
    # the advice: 0/1 codes, read back as bool inside f; a linear model's values are w_i x_i
    f = lambda z: g(z.astype(bool))  # noqa: E731
    np.testing.assert_allclose(A.kernel_shap(f, flags.astype(jnp.int32), 0),
                               [[1.0, 0.0, -1.0]], atol=1e-5)


def test_a_channels_last_image_without_a_convolution_is_not_warned_about():
    nhwc = jax.random.normal(jax.random.key(3), (1, 6, 6, C))  # the leading axes are spatial
    w = jax.random.normal(jax.random.key(4), (6 * 6 * C, 2))
    f = lambda z: z.reshape(len(z), -1) @ w  # noqa: E731
    got, messages = _recorded(lambda: A.occlusion(f, nhwc, 0, window=(2, 2), stride=(2, 2)))
    assert not [m for m in messages if "no convolution" in m]
    np.testing.assert_allclose(got, A.occlusion(f, nhwc, 0, window=(2, 2, C), stride=(2, 2, 1)),
                               rtol=1e-6)
