"""mine and rule_rows take the Binarized values of binarize / activations as their items."""

import numpy as np
import pytest

from jaxplain.rules import binarize, mine, rule_rows
from tests.rules._planted import planted

FAST = dict(k_tail=8, beam=4, k_head=2, batch_size=8, max_head=1, max_rules=2)


def test_mine_of_binarized_layers_is_mine_of_their_items():
    d_a, d_b, _ = planted(0, n=300, rules=2)
    # 0/1 activations above 0.5: binarize gives back the same items, with their thresholds.
    bins = {"a": binarize(d_a.astype(np.float32), threshold=0.5),
            "b": binarize(d_b.astype(np.float32), threshold=0.5)}
    np.testing.assert_array_equal(bins["a"].items, d_a)
    from_items = mine({"a": d_a, "b": d_b}, **FAST)
    from_binarized = mine(bins, **FAST)        # as activations returns them: {site: Binarized}
    assert len(from_items) > 0
    assert [str(r) for r in from_binarized.rules] == [str(r) for r in from_items.rules]
    assert float(from_binarized.code_length) == float(from_items.code_length)
    for rule in from_items.rules:
        np.testing.assert_array_equal(rule_rows(rule, bins), rule_rows(rule, {"a": d_a, "b": d_b}))


def test_a_layer_that_is_no_array_names_the_layer_and_the_accepted_forms():
    d_a, d_b, _ = planted(0, n=100)
    ragged = (d_b, d_b[:3])      # e.g. a tuple that is not a Binarized
    with pytest.raises(TypeError, match=r"layer 'b' must be a bool \(n, d\) array or a Binarized"):
        mine({"a": d_a, "b": ragged}, **FAST)
