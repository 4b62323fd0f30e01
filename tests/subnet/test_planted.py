"""Planted sub-network recovery (spec check 5), frozen weights (3) and fine-tuning (8)."""

import copy

import jax
import numpy as np
import pytest

from jaxplain import subnet
from tests.subnet import _nets


@pytest.fixture(scope="module")
def recovered():
    f, x, params = _nets.planted(0.0)
    before = copy.deepcopy(params)
    sub = subnet.extract(f, x, sites=_nets.SITES, key=jax.random.key(0), l1=1e-3, **_nets.FAST)
    return sub, params, before


def test_recovers_exactly_the_planted_units(recovered):
    sub, _, _ = recovered
    for site, planted in _nets.PLANTED.items():
        assert tuple(np.flatnonzero(np.asarray(sub.masks[site]))) == planted, site
    assert float(sub.region_agreement) == 1.0
    assert float(sub.region_kl) < 1e-3
    assert sub.sparsity >= 0.9
    assert sub.kept_layers == _nets.SITES


def test_subnetwork_fidelity_matches_its_stats(recovered):
    sub, _, _ = recovered
    f, x, _ = _nets.planted(0.0)
    fid = subnet.fidelity(f, sub, x)
    np.testing.assert_allclose(float(fid.agreement), float(sub.region_agreement))
    np.testing.assert_allclose(float(fid.kl), float(sub.region_kl), rtol=1e-4, atol=1e-7)


def test_weights_are_untouched(recovered):
    _, params, before = recovered
    for k in before:
        np.testing.assert_array_equal(params[k], before[k])


def test_scores_and_gates_are_the_only_trainables(recovered):
    sub, _, _ = recovered
    leaves = jax.tree_util.tree_leaves_with_path(sub)
    names = {jax.tree_util.keystr(p[:1]) for p, _ in leaves}
    # The other leaves are statistics of the chosen candidate, not trained.
    assert names == {".masks", ".scores", ".gates", ".region_agreement", ".region_kl", ".l1",
                     ".threshold", ".unscaled_agreement"}
    for site in sub.sites:  # removed units are exactly zero, kept ones positive
        m, s = np.asarray(sub.masks[site]), np.asarray(sub.scores[site])
        assert np.all(s[~m] == 0) and np.all(s[m] > 0)
