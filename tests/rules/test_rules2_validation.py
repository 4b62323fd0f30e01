"""mine's input checks: pairs listed twice, negative labels, options of the wrong type or
range are refused with a ValueError naming them."""

import numpy as np
import pytest

from jaxplain.rules import mine
from tests.rules import _reference as ref


@pytest.fixture(scope="module")
def layers():
    rng = np.random.default_rng(0)
    conv, fc = rng.random((500, 8)) < 0.1, rng.random((500, 8)) < 0.1
    fc[conv[:, 0], :4] = True
    return {"conv": conv, "fc": fc}


def test_a_pair_listed_twice_is_refused(layers):
    once = mine(layers, k_tail=8, pairs=[("conv", "fc")])
    # One pair: L_rule has no log2 P term (P = 1), as the reference's.
    rule = once.rules[0]
    as_ref = [(tuple(rule.head.tolist()), tuple(rule.tail.tolist()), int(rule.min_hits))]
    assert float(once.code_length) == pytest.approx(
        ref.total_length((layers["conv"], layers["fc"]), as_ref), abs=1e-6)
    with pytest.raises(ValueError, match=r"pairs lists \[\('conv', 'fc'\)\] more than once"):
        mine(layers, k_tail=8, pairs=[("conv", "fc"), ("conv", "fc")])


def test_negative_labels_are_named(layers):
    labels = np.r_[-1, np.zeros(499, int)]
    with pytest.raises(ValueError, match=r"negative values in 1 rows \(e.g. -1 at row 0\)"):
        mine(layers, k_tail=8, labels=labels)


@pytest.mark.parametrize("option, value", [
    ("k_tail", 8.0), ("k_tail", True), ("k_tail", 0), ("beam", 2.5), ("max_head", "3"),
    ("batch_size", 16.0), ("k_head", None), ("min_head_support", 2.0), ("max_rules", -1),
    ("max_rules", 1.0), ("eps", -1e-9), ("eps", float("nan")), ("tolerance", -1.0),
    ("min_tail_frac", 1.5), ("min_tail_frac", -0.1), ("time_budget", -1.0),
    ("time_budget", float("nan")), ("eps", "0"), ("eps", float("inf")),
])
def test_options_of_the_wrong_type_or_range_raise_value_error(layers, option, value):
    with pytest.raises(ValueError, match=rf"{option} must be an? .*got {value!r}"):
        mine(layers, **{option: value})


@pytest.mark.parametrize("options", [
    dict(k_tail=np.int64(8)), dict(max_rules=0), dict(eps=0), dict(min_tail_frac=1),
    dict(min_head_support=None, max_rules=None, time_budget=None), dict(time_budget=60),
    dict(time_budget=float("inf")), dict(min_head_support=np.int32(3), eps=np.float32(1e-9)),
])
def test_valid_options_of_every_numeric_type_pass(layers, options):
    rules = mine(layers, **dict(dict(k_tail=8), **options))
    assert len(rules) <= (options.get("max_rules") if options.get("max_rules") is not None
                          else 8)
