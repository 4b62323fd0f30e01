"""Residual planted test (spec check 6): a branch that outputs exactly 0 is removed whole."""

import jax
import numpy as np
import pytest

from jaxplain import subnet
from tests.subnet import _nets


@pytest.mark.filterwarnings("ignore:f predicts class:UserWarning")  # the dead branch is tested, not the region
def test_zero_branch_is_removed_and_fidelity_kept():
    f = _nets.residual_net(_nets.residual_params(zero_branch=True))
    x, _ = _nets.region()
    sub = subnet.extract(f, x, sites=["stem", "conv_a", "conv_b"], key=jax.random.key(0),
                         l1=1e-3, **_nets.FAST)
    assert float(sub.gates["conv_b"]) < 0.5
    assert sub.kept_units["conv_b"] == 0
    assert sub.kept_units["conv_a"] == 0  # only fed the removed branch
    assert float(sub.region_agreement) == 1.0
    assert sub.kept_units["stem"] > 0
    assert np.all(np.asarray(sub.scores["conv_b"]) == 0)
