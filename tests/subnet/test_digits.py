"""Spec check 9 on the default digits CNN (with its residual block): two class pairs, 20 region
images, >= 90% of the units removed with >= 95% label agreement; unseen images reported."""

import jax
import numpy as np
import pytest

from jaxplain import subnet

SITES = ["conv1", "block1/conv_a", "block1/conv_b", "fc1"]


@pytest.mark.parametrize("pair", [(0, 1), (3, 8)])
def test_class_pair_subnetwork_is_sparse_and_faithful(digits_model, pair):
    _, _, f, d = digits_model
    y = np.asarray(d.y_test)
    idx = [np.flatnonzero(y == c) for c in pair]
    region = np.concatenate([i[:10] for i in idx])
    unseen = np.concatenate([i[10:] for i in idx])
    sub = subnet.extract(f, d.x_test[region], sites=SITES, key=jax.random.key(0),
                         sparsity=0.9, l1=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1))
    m = subnet.evaluate(f, sub, d.x_test[region], d.x_test[unseen])
    assert m["removed"] >= 0.9, m
    assert round(m["region_agreement"] * len(region)) >= 0.95 * len(region), m  # 19 of 20
    assert 0.5 < m["unseen_agreement"] <= 1.0, m  # reported; a sub-network of ~10 units
