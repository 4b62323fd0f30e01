"""Quantile thresholds never sit on the value of one sample: recomputed activations that differ
in the last bit (another batch size) binarize the mined data to the same items."""

import numpy as np

from jaxplain.rules import binarize


def _one_ulp_up(a):
    return np.nextafter(a.astype(np.float32), np.float32(np.inf))


def test_a_quantile_on_one_samples_value_moves_halfway_to_the_next():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(23, 5)).astype(np.float32)   # q (n - 1) = 0.5 * 22: whole
    b = binarize(acts, quantile=0.5)
    ordered = np.sort(acts.astype(np.float64), axis=0)
    np.testing.assert_array_equal(b.thresholds, (ordered[11] + ordered[12]) / 2)
    # the same items as at np.quantile itself (the 12th value, off under '>')
    np.testing.assert_array_equal(b.items, acts > np.quantile(acts.astype(np.float64), 0.5, 0))
    assert not np.isin(b.thresholds, acts.astype(np.float64)).any()


def test_the_items_survive_a_last_bit_change_of_the_activations():
    rng = np.random.default_rng(1)
    acts = rng.random((21, 3, 3, 4)).astype(np.float32)  # conv_quantile 0.9 * 20: whole
    for kw in ({"conv_mode": "filter"}, {"conv_mode": "locality"}):
        b = binarize(acts, **kw)
        again = binarize(_one_ulp_up(acts), threshold=b.thresholds, conv_quantile=None, **kw)
        np.testing.assert_array_equal(again.items, b.items)
    dense = acts.reshape(21, -1)
    b = binarize(dense, quantile=0.5)
    np.testing.assert_array_equal(binarize(_one_ulp_up(dense), threshold=b.thresholds).items,
                                  b.items)


def test_a_value_several_samples_share_stays_the_threshold():
    # ReLU zeros end at the quantile's position (x_(2) = 0 < x_(3)): still 'active', > 0
    relu = np.array([[0.0], [0.0], [0.0], [1.0], [2.0]])
    assert binarize(relu, quantile=0.5).thresholds.tolist() == [0.0]
    # Tied with the maximum: the next lower value, halfway up when one sample takes it
    top = np.array([[0.1], [0.3], [0.5], [0.5], [0.5], [0.5]])
    b = binarize(top, quantile=0.9)
    assert b.thresholds.tolist() == [0.4] and b.items[:, 0].tolist() == [0, 0, 1, 1, 1, 1]
    shared = np.array([[0.0], [0.0], [0.5], [0.5], [0.5], [0.5]])
    assert binarize(shared, quantile=0.9).thresholds.tolist() == [0.0]
