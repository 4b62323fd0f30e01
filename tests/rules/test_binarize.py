"""binarize: dense thresholds, per-filter quantiles of pooled conv maps, locality items."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain.rules import activations, binarize, mine


def test_dense_threshold_default_is_relu_active():
    acts = np.array([[0.0, 2.0, -1.0], [1.0, 0.0, 0.5]])
    items, thresholds, shape = binarize(acts)
    assert items.tolist() == [[False, True, False], [True, False, True]]
    assert thresholds.tolist() == [0.0, 0.0, 0.0] and shape == (3,)
    items, thresholds, _ = binarize(acts, threshold=np.array([0.5, 0.5, 0.0]))
    assert items.tolist() == [[False, True, False], [True, False, True]]


def test_conv_filter_mode_pools_and_uses_per_filter_quantile():
    rng = np.random.default_rng(0)
    acts = rng.random((200, 4, 4, 3)) * np.array([1.0, 10.0, 100.0])  # filters on other scales
    items, thresholds, shape = binarize(acts)
    pooled = acts.max(axis=(1, 2))
    np.testing.assert_allclose(thresholds, np.quantile(pooled, 0.9, axis=0))
    assert shape == (3,)
    # Each filter is on in about the top 10% of samples whatever its scale.
    np.testing.assert_array_equal(items.sum(0), [20, 20, 20])
    np.testing.assert_array_equal(items, pooled > thresholds)
    mean_items, _, _ = binarize(acts, pool="mean", conv_quantile=0.5)
    assert mean_items.sum(0).tolist() == [100, 100, 100]


def test_conv_locality_mode_has_one_item_per_position_and_filter():
    rng = np.random.default_rng(1)
    acts = rng.random((50, 3, 2, 4))
    acts[:, 1, 0, 2] += 10.0 * (np.arange(50) < 10)   # filter 2 fires at (1, 0) in 10 rows
    items, thresholds, shape = binarize(acts, conv_mode="locality", conv_quantile=0.8)
    assert items.shape == (50, 3 * 2 * 4) and shape == (3, 2, 4)
    index = np.ravel_multi_index((1, 0, 2), shape)
    assert items[:, index].tolist() == (np.arange(50) < 10).tolist()
    np.testing.assert_allclose(thresholds, np.quantile(acts.reshape(50, -1), 0.8, axis=0))


def test_a_quantile_tied_with_the_maximum_falls_to_the_next_lower_value():
    # Filters that fire in ~76% of samples, always at 0.5: the 0.9-quantile of the pooled map
    # is its maximum 0.5, and '> 0.5' used to switch every filter off everywhere (mine then
    # found 0 rules). The threshold is now the next lower value, 0: on wherever it fires.
    rng = np.random.default_rng(0)
    acts = np.zeros((1000, 6, 6, 4), np.float32)
    acts[..., :3][rng.random((1000, 6, 6, 3)) < 0.04] = 0.5
    acts[..., 3] = rng.random((1000, 6, 6))              # filter 3: no ties
    pooled = acts.max(axis=(1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # no item is constant
        b = binarize(acts)
    assert b.thresholds[:3].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_array_equal(b.items[:, :3], pooled[:, :3] == 0.5)
    assert 0.7 < b.items[:, :3].mean() < 0.8
    assert b.thresholds[3] == np.quantile(pooled[:, 3].astype(np.float64), 0.9)
    assert b.items[:, 3].sum() == 100
    # The recorded thresholds reproduce the items ('>' everywhere), e.g. on held-out data.
    again = binarize(acts, threshold=b.thresholds, conv_quantile=None)
    np.testing.assert_array_equal(again.items, b.items)
    # The same for a dense quantile, and for locality items.
    dense = binarize(pooled, quantile=0.9)
    np.testing.assert_array_equal(dense.items, b.items)
    local = binarize(acts[..., :3], conv_mode="locality", conv_quantile=0.99)
    np.testing.assert_array_equal(local.items, acts[..., :3].reshape(1000, -1) == 0.5)
    # Mined, the three copied filters give three rules again (0 before).
    rules = mine({"a": b.items[:, :3], "b": b.items[:, 2::-1].copy()}, k_tail=4)
    assert len(rules) == 3 and rules.compression < 60


def test_items_the_threshold_makes_constant_are_warned_about_dead_units_are_not():
    acts = np.zeros((50, 4, 4, 3))
    acts[:, 0, 0, 1] = np.arange(50)                     # filter 1 varies; 0 and 2 are constant
    acts[:, :, :, 2] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # constant-valued items: no warning
        binarize(acts)
        binarize(acts[:, 0, 0, :], threshold=0.5)
    dense = np.stack([np.arange(50.0), np.arange(50.0), np.zeros(50)], axis=1)
    with pytest.warns(UserWarning, match=r"2 of the 3 items of the activations vary over the "
                                         r"50 samples but are constant after thresholding "
                                         r"\(1 never on, 1 always on\)"):
        binarize(dense, threshold=np.array([100.0, -1.0, 0.0]))
    with pytest.warns(UserWarning, match=r"1 of the 3 items .* \(1 never on, 0 always on\)"):
        binarize(acts, threshold=100.0, conv_quantile=None)
    f, _, _ = _tiny_cnn()
    x = np.asarray(jax.random.normal(jax.random.key(9), (12, 8, 8, 1)))
    with pytest.warns(UserWarning, match=r"items of site 'relu_1' vary .* but are constant"):
        activations(f, x, "relu*", threshold=1e9)


@pytest.mark.parametrize("conv_mode", ["filter", "locality"])
def test_channels_first_maps_give_the_items_of_their_nhwc_transpose(conv_mode):
    rng = np.random.default_rng(2)
    nhwc = rng.random((40, 3, 2, 5)) * np.arange(1.0, 6.0)   # filters on different scales
    nchw = np.transpose(nhwc, (0, 3, 1, 2))
    want = binarize(nhwc, conv_mode=conv_mode, conv_quantile=0.7)
    got = binarize(nchw, conv_mode=conv_mode, conv_quantile=0.7, channel_axis=1)
    np.testing.assert_array_equal(got.items, want.items)
    np.testing.assert_array_equal(got.thresholds, want.thresholds)
    assert got.shape == want.shape
    # Read as NHWC, the same array would have 2 "filters" (its last axis) instead of 5.
    assert binarize(nchw, conv_mode=conv_mode, conv_quantile=0.7).shape[-1] == 2


@pytest.mark.parametrize("kwargs, error", [
    (dict(acts=np.zeros((2, 2, 2, 2)), channel_axis=2), ValueError),
    (dict(acts=np.zeros((2, 3, 4)), channel_axis=0), ValueError),
    (dict(acts=np.zeros((3,))), ValueError),
    (dict(acts=np.zeros((0, 3))), ValueError),
    (dict(acts=np.array([[np.nan]])), ValueError),
    (dict(acts=np.zeros((2, 3)), quantile=1.5), ValueError),
    (dict(acts=np.zeros((2, 2, 2, 2)), conv_mode="pixels"), ValueError),
    (dict(acts=np.array([["a"]])), TypeError),
    (dict(acts=np.zeros((2, 3)), threshold=0.5, quantile=0.5), ValueError),
    (dict(acts=np.zeros((2, 3)), threshold=np.zeros(4)), ValueError),
])
def test_bad_input(kwargs, error):
    with pytest.raises(error):
        binarize(**kwargs)


def _tiny_cnn():
    k = jax.random.split(jax.random.key(0), 2)
    wc = jax.random.normal(k[0], (3, 3, 1, 4))
    wd = jax.random.normal(k[1], (4 * 4 * 4, 6)) / 8

    def f(x):
        h = jax.lax.conv_general_dilated(x, wc, (2, 2), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        h = jax.nn.relu(h)
        z = jax.nn.relu(h.reshape(h.shape[0], -1) @ wd)
        return z @ jnp.ones((6, 3))

    return f, wc, wd


def test_activations_captures_in_batches_and_binarizes_like_binarize():
    import jaxplain as jp

    f, wc, wd = _tiny_cnn()
    x = np.asarray(jax.random.normal(jax.random.key(3), (37, 8, 8, 1)))
    names = jp.core.relu_sites(f, x[:2])
    assert len(names) == 2
    out = activations(f, x, names, batch_size=10, locality=[names[0]])
    _, full = jp.capture(f, list(names))(x)
    conv, dense = np.asarray(full[names[0]]), np.asarray(full[names[1]])
    local = binarize(conv, conv_mode="locality")
    np.testing.assert_array_equal(out[names[0]].items, local.items)
    assert out[names[0]].shape == (4, 4, 4)
    np.testing.assert_array_equal(out[names[1]].items, dense > 0)
    pooled = activations(f, x, names, batch_size=16)
    np.testing.assert_array_equal(pooled[names[0]].items, binarize(conv).items)
    assert pooled[names[0]].shape == (4,)


def test_activations_batch_size_none_is_one_pass_and_bad_values_say_what_is_expected():
    import jaxplain as jp

    f, _, _ = _tiny_cnn()
    x = np.asarray(jax.random.normal(jax.random.key(4), (23, 8, 8, 1)))
    names = jp.core.relu_sites(f, x[:2])
    whole = activations(f, x, names, batch_size=None, quantile=0.5)
    split = activations(f, x, names, batch_size=5, quantile=0.5)
    for s in names:
        np.testing.assert_array_equal(whole[s].items, split[s].items)
        np.testing.assert_array_equal(whole[s].thresholds, split[s].thresholds)
    assert activations(f, x, names, batch_size=np.int64(100))[names[1]].items.shape == (23, 6)
    for bad in (0, -3, 0.5, 2.0, "8", True):
        with pytest.raises(ValueError, match=r"batch_size must be None .* or an int >= 1"):
            activations(f, x, names, batch_size=bad)


def test_locality_items_recover_a_planted_local_rule():
    # When dense unit 2 fires, filter 1 fires in a 2 x 2 patch: mined in locality mode, the
    # rule's tail is exactly that patch of that filter.
    rng = np.random.default_rng(2)
    dense, conv = rng.random((600, 8)), rng.random((600, 6, 6, 4))
    fires = dense[:, 2] > np.quantile(dense[:, 2], 0.8)
    conv[np.ix_(fires, [1, 2], [3, 4], [1])] += 1.0
    local = binarize(conv, conv_mode="locality", conv_quantile=0.8)
    layers = {"fc": binarize(dense, quantile=0.8).items, "conv_local": local.items}
    rules = mine(layers, pairs=[("fc", "conv_local")], k_tail=16, beam=8, k_head=4)
    assert len(rules) >= 1
    first = rules.rules[0]
    assert first.head.tolist() == [2]
    cells = sorted(zip(*np.unravel_index(first.tail, local.shape)))
    assert cells == [(1, 3, 1), (1, 4, 1), (2, 3, 1), (2, 4, 1)]


def test_quantile_on_a_conv_map_raises_naming_conv_quantile():
    # quantile= is the dense option; on a conv map it used to be ignored silently (0.9 used).
    acts = np.random.default_rng(4).random((100, 4, 4, 3))
    with pytest.raises(ValueError, match=r"pass conv_quantile=0.5 instead"):
        binarize(acts, quantile=0.5)
    with pytest.raises(ValueError, match=r"conv_quantile="):
        binarize(acts, quantile=0.5, conv_quantile=None)
    assert binarize(acts, conv_quantile=0.5).items.mean() == 0.5
    # threshold= on a conv map is used only with conv_quantile=None, never ignored.
    with pytest.raises(ValueError, match=r"conv_quantile=None"):
        binarize(acts, threshold=0.5)
    items = binarize(acts, threshold=0.5, conv_quantile=None).items
    np.testing.assert_array_equal(items, acts.max(axis=(1, 2)) > 0.5)


def test_activations_expands_globs_lists_and_predicates_like_capture():
    import jaxplain as jp

    f, _, _ = _tiny_cnn()
    x = np.asarray(jax.random.normal(jax.random.key(5), (20, 8, 8, 1)))
    conv, dense = jp.core.relu_sites(f, x[:2])
    _, full = jp.capture(f, "*")(x)
    everything = activations(f, x, "*", conv_quantile=0.5)
    assert list(everything) == [s.name for s in jp.sites(f, x)]   # every site, program order
    for name, value in full.items():
        value = np.asarray(value)
        want = binarize(value, conv_quantile=0.5) if value.ndim == 4 else binarize(
            value.reshape(len(value), -1))
        np.testing.assert_array_equal(everything[name].items, want.items)
    relus = activations(f, x, "relu*")
    assert list(relus) == [conv, dense]
    # A sequence keeps its own order; a predicate picks as in capture.
    assert list(activations(f, x, [dense, "relu"])) == [dense, conv]
    picked = activations(f, x, lambda name, site: site.op == "relu", locality="relu")
    assert list(picked) == [conv, dense] and picked[conv].shape == (4, 4, 4)
    with pytest.raises(ValueError, match="Did you mean"):
        activations(f, x, "rleu")
    with pytest.raises(ValueError, match="not among the selected sites"):
        activations(f, x, [dense], locality=[conv])


def test_quantile_for_conv_sites_only_raises_in_activations():
    f, _, _ = _tiny_cnn()
    x = np.asarray(jax.random.normal(jax.random.key(6), (12, 8, 8, 1)))
    with pytest.raises(ValueError, match="pass conv_quantile=0.5 instead"):
        activations(f, x, "relu", quantile=0.5)
    import jaxplain as jp

    got = activations(f, x, "relu*", quantile=0.5)                 # one dense site: fine
    dense = np.asarray(jp.capture(f, "relu_1")(x)[1]["relu_1"])
    np.testing.assert_array_equal(got["relu_1"].items, binarize(dense, quantile=0.5).items)


@pytest.mark.parametrize("locality", [(), ("relu",)])
def test_held_out_data_reuses_the_training_thresholds(locality):
    # thresholds_from= binarizes held-out data as the documented manual recipe does:
    # binarize(acts, threshold=train[s].thresholds, conv_quantile=None) per site.
    import jaxplain as jp

    f, _, _ = _tiny_cnn()
    x = np.asarray(jax.random.normal(jax.random.key(7), (60, 8, 8, 1)))
    train_x, test_x = x[:40], x[40:] * 1.5               # shifted data: new quantiles differ
    train = activations(f, train_x, "relu*", quantile=0.75, conv_quantile=0.8,
                        locality=locality)
    test = activations(f, test_x, list(train), locality=locality, thresholds_from=train,
                       batch_size=7)
    _, full = jp.capture(f, list(train))(test_x)
    for s, b in train.items():
        acts = np.asarray(full[s])
        if acts.ndim == 4:
            mode = "locality" if s in locality else "filter"
            manual = binarize(acts, threshold=b.thresholds, conv_quantile=None, conv_mode=mode)
        else:
            manual = binarize(acts, threshold=b.thresholds)
        np.testing.assert_array_equal(test[s].items, manual.items)
        np.testing.assert_array_equal(test[s].thresholds, b.thresholds)
        assert test[s].shape == b.shape
    fresh = activations(f, test_x, "relu*", quantile=0.75, conv_quantile=0.8, locality=locality)
    assert any((fresh[s].thresholds != train[s].thresholds).any() for s in train)


def test_thresholds_from_errors_say_how_to_fix():
    f, _, _ = _tiny_cnn()
    x = np.asarray(jax.random.normal(jax.random.key(8), (10, 8, 8, 1)))
    train = activations(f, x, "relu")
    with pytest.raises(ValueError, match="no thresholds for site 'relu_1'"):
        activations(f, x, "relu*", thresholds_from=train)
    with pytest.raises(ValueError, match="locality mode"):
        activations(f, x, "relu", locality="relu", thresholds_from=train)
    with pytest.raises(ValueError, match="leave threshold="):
        activations(f, x, "relu", quantile=0.5, thresholds_from=train)
    with pytest.raises(TypeError, match="Binarized"):
        activations(f, x, "relu", thresholds_from={"relu": train["relu"].thresholds})


def test_docs_held_out_example_runs(digits_model):
    # docs/rules.md's held-out recipe runs on the digits CNN and gives the manual recipe's items.
    import pathlib
    import re

    _, _, f, digits = digits_model
    text = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "rules.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S)
                if "thresholds_from=" in b]
    namespace = {"f": f, "digits": digits}
    exec(compile(block, "rules.md", "exec"), namespace)  # noqa: S102
    train, test = namespace["train"], namespace["test"]
    assert test["relu_1"].items.shape == (digits.x_test.shape[0], 64)
    np.testing.assert_array_equal(test["relu_1"].thresholds, train["relu_1"].thresholds)


def test_inside_jit_binarize_and_activations_say_they_run_on_the_host():
    acts = jnp.linspace(0.0, 1.0, 40).reshape(20, 2)
    with pytest.raises(TypeError, match="acts must be a concrete array.*outside"):
        jax.jit(lambda a: binarize(a, threshold=0.5).items)(acts)
    f = lambda x: jax.nn.relu(x)  # noqa: E731
    with pytest.raises(TypeError, match="x must be a concrete array.*outside"):
        jax.jit(lambda x: activations(f, x, ["relu"])["relu"].items)(acts)


def test_quantile_thresholds_need_a_bounded_float64_copy(monkeypatch):
    """Locality items of many rows (a trial: 43,104 rows of a 1,024-item map peaked at 1.6 GB):
    the float64 quantile copies are made a block of columns at a time, so the peak is the bool
    items and a few blocks, not several float64 copies of the whole; the result is the same as
    one block of every column and as np.quantile on each column."""
    import tracemalloc

    from jaxplain.rules import _binarize

    rng = np.random.default_rng(0)
    acts = np.maximum(rng.normal(size=(8000, 1024)), 0).astype(np.float32)
    whole = binarize(acts, quantile=0.75)
    monkeypatch.setattr(_binarize, "_BLOCK_BYTES", 1 << 22)
    tracemalloc.start()
    try:
        blocks = binarize(acts, quantile=0.75)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(blocks.items, whole.items)
    np.testing.assert_array_equal(blocks.thresholds, whole.thresholds)
    reference = np.quantile(acts[:, :3].astype(np.float64), 0.75, axis=0)
    assert (np.abs(whole.thresholds[:3] - reference) < 1e-3).all()
    assert peak < acts.nbytes, (peak, acts.nbytes)  # old: two float64 copies and more
