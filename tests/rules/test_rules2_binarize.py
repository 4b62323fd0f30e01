"""binarize and activations on integer and bfloat16 activations, non-finite values refused,
and thresholds_from= of another pool refused."""

import pickle

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jaxplain as jp
from jaxplain.rules import Binarized, activations, binarize

KINDS = [dict(), dict(quantile=0.5)]
MAPS = [dict(), dict(conv_mode="locality", conv_quantile=0.7), dict(pool="mean")]


def _same(got, want):
    np.testing.assert_array_equal(got.items, want.items)
    np.testing.assert_array_equal(got.thresholds, want.thresholds)
    assert got.shape == want.shape


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.uint8])
def test_integer_activations_binarize_as_their_float64_copy(dtype):
    rng = np.random.default_rng(0)
    dense = rng.integers(0, 5, (40, 6)).astype(dtype)      # quantized: many ties
    for kw in KINDS:
        _same(binarize(dense, **kw), binarize(dense.astype(np.float64), **kw))
    conv = rng.integers(0, 7, (30, 3, 3, 4)).astype(dtype)
    for kw in MAPS:
        _same(binarize(conv, **kw), binarize(conv.astype(np.float64), **kw))


def test_bfloat16_activations_binarize_as_their_float32_copy():
    rng = np.random.default_rng(1)
    dense = rng.normal(size=(40, 6)).astype(ml_dtypes.bfloat16)
    for kw in KINDS:
        _same(binarize(dense, **kw), binarize(dense.astype(np.float32), **kw))
    conv = jnp.asarray(rng.normal(size=(30, 3, 3, 4)), jnp.bfloat16)   # a JAX array too
    for kw in MAPS:
        _same(binarize(conv, **kw), binarize(np.asarray(conv, np.float32), **kw))


def test_a_bfloat16_model_binarized_by_hand_as_by_activations():
    # docs/rules.md's "same by hand" path: capture + binarize at the training thresholds.
    w = jnp.asarray(np.random.default_rng(2).normal(size=(3, 3, 1, 4)), jnp.bfloat16)

    def f(x):
        h = jax.lax.conv_general_dilated(x.astype(jnp.bfloat16), w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.max(jax.nn.relu(h), axis=(1, 2))

    x = np.random.default_rng(3).normal(size=(48, 6, 6, 1)).astype(np.float32)
    train = activations(f, x[:24], "relu")
    test = activations(f, x[24:], "relu", thresholds_from=train)["relu"]
    acts = jp.capture(f, "relu")(x[24:])[1]["relu"]
    assert acts.dtype == jnp.bfloat16
    by_hand = binarize(acts, threshold=train["relu"].thresholds, conv_quantile=None)
    np.testing.assert_array_equal(by_hand.items, test.items)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_activations_are_refused(bad):
    acts = np.array([[0.0], [1.0], [2.0], [bad], [bad]])
    with pytest.raises(ValueError, match="NaN and .* infinite values; binarize needs finite"):
        binarize(acts, quantile=0.5)
    with pytest.raises(ValueError, match="infinite values"):
        binarize(np.stack([acts] * 2, axis=-1).reshape(5, 1, 1, 2))   # a conv map too

    def f(x):
        return jax.nn.relu(x @ jnp.ones((2, 3)) * jnp.where(x[:, :1] > 0, abs(bad), 1.0))

    x = np.random.default_rng(4).normal(size=(8, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="site 'relu' contains"):
        activations(f, x, "relu")


def _conv(x):
    w = jnp.asarray(np.random.default_rng(5).normal(size=(3, 3, 1, 4)), jnp.float32)
    h = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.max(jax.nn.relu(h), axis=(1, 2))


@pytest.mark.filterwarnings("ignore:.*constant after thresholding")
def test_thresholds_from_another_pool_is_refused():
    x = np.random.default_rng(6).normal(size=(40, 6, 6, 1)).astype(np.float32)
    for pool, other in (("max", "mean"), ("mean", "max")):
        train = activations(_conv, x[:20], "relu", pool=pool)
        assert train["relu"].pool == pool
        with pytest.raises(ValueError, match=f"pool={other!r} here .* pass pool={pool!r}"):
            activations(_conv, x[20:], "relu", pool=other, thresholds_from=train)
        same = activations(_conv, x[20:], "relu", pool=pool, thresholds_from=train)["relu"]
        acts = jp.capture(_conv, "relu")(x[20:])[1]["relu"]
        want = binarize(acts, threshold=train["relu"].thresholds, conv_quantile=None, pool=pool)
        np.testing.assert_array_equal(same.items, want.items)
    # Locality items are not pooled: their pool= does not matter.
    local = activations(_conv, x[:20], "relu", locality="relu")
    assert local["relu"].pool is None
    activations(_conv, x[20:], "relu", locality="relu", pool="mean", thresholds_from=local)


def test_a_binarized_keeps_its_pool_and_unpacks_as_three_fields():
    b = binarize(np.random.default_rng(7).normal(size=(10, 2, 2, 3)), pool="mean")
    items, thresholds, shape = b
    assert b.pool == "mean" and shape == (3,)
    assert pickle.loads(pickle.dumps(b)).pool == "mean"
    assert b._replace(thresholds=thresholds + 1).pool == "mean"
    assert binarize(np.zeros((3, 2))).pool is None
    assert Binarized(items, thresholds, shape).pool is None     # built by hand: unknown
