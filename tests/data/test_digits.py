"""The embedded digits data set and the default model's architecture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import data


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


def test_split_shapes_dtypes_and_range(digits):
    assert digits.x_train.shape == (1347, 8, 8, 1) and digits.x_test.shape == (450, 8, 8, 1)
    assert digits.y_train.shape == (1347,) and digits.y_test.shape == (450,)
    assert digits.x_train.dtype == jnp.float32 and digits.y_train.dtype == jnp.int32
    for x in (digits.x_train, digits.x_test):
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # sklearn's grey levels are 0..16, scaled by 1/16: every value is a multiple of 1/16.
    scaled = np.asarray(digits.x_train) * 16
    np.testing.assert_array_equal(scaled, np.round(scaled))


def test_split_is_a_stratified_partition_of_sklearns_digits(digits):
    from sklearn.datasets import load_digits as sk_load

    raw = sk_load()
    ours = np.concatenate([digits.x_train, digits.x_test])[..., 0] * 16
    labels = np.concatenate([digits.y_train, digits.y_test])
    def multiset(images, ys):
        return sorted(a.tobytes() + bytes([int(y)]) for a, y in zip(images.astype(np.uint8), ys))

    assert multiset(ours, labels) == multiset(raw.images, raw.target)
    test_counts = np.bincount(np.asarray(digits.y_test), minlength=10)
    all_counts = np.bincount(raw.target, minlength=10)
    assert np.all(np.abs(test_counts - 0.25 * all_counts) <= 1)


def test_split_is_fixed(digits):
    again = data.load_digits()
    for a, b in zip(jax.tree.leaves(digits), jax.tree.leaves(again)):
        np.testing.assert_array_equal(a, b)


def test_digits_is_a_frozen_pytree(digits):
    assert len(jax.tree.leaves(digits)) == 4
    doubled = jax.jit(lambda d: jax.tree.map(lambda a: a * 2, d))(digits)
    assert isinstance(doubled, data.Digits)
    np.testing.assert_array_equal(doubled.y_test, 2 * np.asarray(digits.y_test))
    with pytest.raises(AttributeError):
        digits.x_train = None


def test_model_sites_follow_the_contract(digits):
    import jaxplain

    model = data.DigitsCNN()
    variables = model.init(jax.random.key(0), digits.x_test[:1])
    f = jaxplain.as_function(model, variables)
    names = [s.name for s in jaxplain.sites(f, digits.x_test[:3])]
    assert names == ["conv1", "relu", "block1/conv_a", "block1/relu", "block1/conv_b", "block1/add",
                     "block1/relu_1", "block1", "avg_pool", "fc1", "relu_1", "head"]
    relus = jaxplain.core.relu_sites(f, digits.x_test[:3])
    assert relus == ("relu", "block1/relu", "block1/relu_1", "relu_1")


def test_residual_block_computes_relu_of_x_plus_branch():
    block = data.ResidualBlock(4)
    x = jax.random.normal(jax.random.key(1), (2, 5, 5, 4))
    variables = block.init(jax.random.key(2), x)
    p = variables["params"]

    def conv(x, q):
        y = jax.lax.conv_general_dilated(x, q["kernel"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + q["bias"]

    expected = jax.nn.relu(x + conv(jax.nn.relu(conv(x, p["conv_a"])), p["conv_b"]))
    np.testing.assert_allclose(block.apply(variables, x), expected, rtol=1e-5, atol=1e-5)


def test_train_rejects_bad_options(digits):
    with pytest.raises(ValueError, match="epochs"):
        data.train(jax.random.key(0), digits, epochs=0, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        data.train(jax.random.key(0), digits, batch_size=5000, progress=False)


def test_history_json_round_trip_and_validation():
    h = data.TrainHistory(loss=(1.0, 0.5), train_accuracy=(0.5, 0.9), test_accuracy=(0.6, 0.95))
    assert data.TrainHistory.from_json(h.to_json()) == h
    with pytest.raises(ValueError, match="length"):
        data.TrainHistory.from_json({"loss": [1.0], "train_accuracy": [], "test_accuracy": [1.0]})
    with pytest.raises(ValueError, match="malformed"):
        data.TrainHistory.from_json({"loss": [1.0]})
