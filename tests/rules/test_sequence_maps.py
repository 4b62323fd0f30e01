"""1-D conv / sequence maps ``(n, length, c)``: filters pooled over the length, as 2-D maps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain.rules import activations, binarize, mine, rule_objective
from tests.rules.test_prototype import _rule

LENGTH, FILTERS, UNITS = 24, 4, 6


def _seq_cnn():
    """x (n, 24, 1) -> 1-D conv, 4 filters -> ReLU -> max over the length -> dense 6 -> ReLU.

    Filter 0 is a matched filter of the bump [1, 2, 1]; dense units 2, 3, 4 read filter 0
    (planted rule conv[0] -> fc[2,3,4]), the others read the noise filters 1-3.
    """
    k = jax.random.split(jax.random.key(0), 2)
    wc = 0.3 * jax.random.normal(k[0], (3, 1, FILTERS))
    wc = wc.at[:, 0, 0].set(jnp.array([1.0, 2.0, 1.0]))
    wd = 0.3 * jnp.abs(jax.random.normal(k[1], (FILTERS, UNITS)))
    wd = wd.at[0, :].set(0.0).at[0, 2:5].set(1.0).at[1:, 2:5].set(0.0)

    def f(x):
        h = jax.lax.conv_general_dilated(x, wc, (1,), "SAME",
                                         dimension_numbers=("NWC", "WIO", "NWC"))
        h = jax.nn.relu(h)                                    # (n, 24, 4): the 1-D conv site
        z = jax.nn.relu(h.max(axis=1) @ wd)
        return z @ jnp.ones((UNITS, 2))

    return f


def _bumps(n=400, seed=0):
    """Noise, with a [1, 2, 1] bump at a random position in the first 20% of the rows."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.1, (n, LENGTH, 1)).astype(np.float32)
    planted = np.arange(n) < n // 5
    for i in np.flatnonzero(planted):
        p = rng.integers(1, LENGTH - 4)
        x[i, p:p + 3, 0] += [1.0, 2.0, 1.0]
    return x, planted


def test_binarize_reads_a_1d_map_as_filters_pooled_over_the_length():
    rng = np.random.default_rng(0)
    acts = rng.random((150, 10, 3)) * np.array([1.0, 10.0, 100.0])
    items, thresholds, shape = binarize(acts)
    np.testing.assert_allclose(thresholds, np.quantile(acts.max(axis=1), 0.9, axis=0))
    assert shape == (3,) and items.sum(0).tolist() == [15, 15, 15]
    # The same items as the map with a dummy spatial axis, in both modes.
    for mode in ("filter", "locality"):
        one = binarize(acts, conv_mode=mode, pool="mean", conv_quantile=0.7)
        two = binarize(acts[:, :, None, :], conv_mode=mode, pool="mean", conv_quantile=0.7)
        np.testing.assert_array_equal(one.items, two.items)
        np.testing.assert_array_equal(one.thresholds, two.thresholds)
    local = binarize(acts, conv_mode="locality")
    assert local.shape == (10, 3) and local.items.shape == (150, 30)
    # Channels first (n, c, length).
    ncl = binarize(np.transpose(acts, (0, 2, 1)), channel_axis=1)
    np.testing.assert_array_equal(ncl.items, items)
    with pytest.raises(ValueError, match="pass conv_quantile=0.5 instead"):
        binarize(acts, quantile=0.5)


def test_activations_pools_a_1d_conv_site_like_binarize():
    f = _seq_cnn()
    x, _ = _bumps(60)
    conv, dense = jp.core.relu_sites(f, x[:2])
    _, full = jp.capture(f, [conv, dense])(x)
    assert full[conv].shape == (60, LENGTH, FILTERS)
    out = activations(f, x, [conv, dense], batch_size=16)
    # Used to be LENGTH x FILTERS per-value items at > 0.
    assert out[conv].shape == (FILTERS,) and out[conv].items.shape == (60, FILTERS)
    np.testing.assert_array_equal(out[conv].items, binarize(np.asarray(full[conv])).items)
    local = activations(f, x, [conv], locality=[conv], batch_size=16)[conv]
    assert local.shape == (LENGTH, FILTERS)
    np.testing.assert_array_equal(
        local.items, binarize(np.asarray(full[conv]), conv_mode="locality").items)
    with pytest.raises(ValueError, match="pass conv_quantile=0.5 instead"):
        activations(f, x, [conv], quantile=0.5)


def test_token_features_are_a_map_too():
    # A token-wise dense layer gives (n, tokens, features): read like a 1-D conv (a unit
    # applied at every token is a width-1 convolution), one item per feature.
    w = jax.random.normal(jax.random.key(1), (3, 5))
    f = lambda x: jax.nn.relu(x @ w).mean(axis=1) @ jnp.ones((5, 2))
    x = np.asarray(jax.random.normal(jax.random.key(2), (40, 7, 3)))
    (site,) = jp.core.relu_sites(f, x[:2])
    got = activations(f, x, site)[site]
    acts = np.asarray(jp.capture(f, site)(x)[1][site])
    assert got.shape == (5,)
    np.testing.assert_array_equal(got.items, binarize(acts).items)


def test_a_planted_1d_filter_rule_is_found():
    f = _seq_cnn()
    x, planted = _bumps(400)
    conv, dense = jp.core.relu_sites(f, x[:2])
    bins = activations(f, x, [conv, dense], quantile=0.8, conv_quantile=0.8)
    assert bins[conv].items[:, 0].tolist() == planted.tolist()   # filter 0 = the bump rows
    rules = mine({"conv": bins[conv].items, "fc": bins[dense].items}, k_tail=6, beam=8,
                 k_head=4)
    first = rules.rules[0]
    assert first.head.tolist() == [0] and first.tail.tolist() == [2, 3, 4]
    assert rules.complete


def test_rule_objective_on_a_1d_locality_layer():
    f = _seq_cnn()
    x, _ = _bumps(5)
    conv, dense = jp.core.relu_sites(f, x[:2])
    logits, acts = jp.capture(f, [conv, dense])(x)
    c = np.asarray(acts[conv])
    items = [5, 17, 40]
    obj = rule_objective(_rule(items, [1], head_layer="c"), {"c": conv, "fc": dense},
                         part="head", layouts={"c": (LENGTH, FILTERS)})
    want = sum(c[:, p, k].sum() for p, k in zip(*np.unravel_index(items, (LENGTH, FILTERS))))
    assert float(obj(acts, logits, x)) == pytest.approx(want, rel=1e-5)
