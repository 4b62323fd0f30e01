"""Rule search: planted-rule recovery, no rules on independent data, errors, RuleSet, pairs."""

import dataclasses
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxplain.rules import RuleSet, mine, rule_rows, specificity
from tests.rules._planted import match, planted

FAST = dict(k_tail=16, beam=16, k_head=8, batch_size=16)


@pytest.mark.parametrize("tail_mode, destructive, additive, on, planted_rules, m_b", [
    ("robust", 0.1, 0.01, 0.9, 3, 32), ("robust", 0.2, 0.01, 0.9, 3, 32),
    ("robust", 0.2, 0.05, 0.9, 3, 32), ("robust", 0.1, 0.05, 0.9, 5, 48),
    ("exact", 0.0, 0.01, 1.0, 3, 32), ("exact", 0.0, 0.05, 1.0, 3, 32)])
def test_planted_rules_are_recovered(tail_mode, destructive, additive, on, planted_rules, m_b):
    # Destructive noise flips planted 1 -> 0, additive noise every 0 -> 1 (spec §6's grid).
    # Exact tails ("exact") only fit blocks without destructive noise.
    d_a, d_b, truth = planted(0, destructive=destructive, additive=additive, on=on,
                              rules=planted_rules, m_b=m_b)
    rules = mine({"a": d_a, "b": d_b}, tail_mode=tail_mode, **FAST)
    for (head, tail), (found, jaccard) in zip(truth, match(rules, truth)):
        assert found is not None and found[0] == head, (head, tail, found)   # heads exact
        assert jaccard >= 0.8, (head, tail, found)                            # tails nearly
    assert len(rules) <= len(truth) + 1                                       # few spurious
    assert rules.compression < 100.0


# Derandomized: the property holds with high probability, not always. At density 0.02, seed
# 123287 has items 17 and 5 (about 20 and 15 ones in 1000 rows) together 4 times where 0.3 are
# expected (p ~ 3e-4 for one pair, ~0.2 over the 768 pairs), and MDL takes that as one rule.
@settings(max_examples=5, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10**6), density=st.floats(0.02, 0.3))
def test_independent_data_gives_no_rules(seed, density):
    rng = np.random.default_rng(seed)
    d_a = rng.random((1000, 24)) < density
    d_b = rng.random((1000, 32)) < rng.uniform(density / 2, density, 32)
    rules = mine({"a": d_a, "b": d_b}, **FAST)
    assert len(rules) == 0
    assert float(rules.code_length) == float(rules.baseline_code_length)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10**6), density=st.floats(0.05, 0.3),
       destructive=st.sampled_from([0.0, 0.05, 0.1]), additive=st.sampled_from([0.0, 0.01, 0.05]))
def test_single_planted_rule_is_found_first(seed, density, destructive, additive):
    # Background items are Bernoulli(p_i), p_i ~ U(0.01, density).
    d_a, d_b, truth = planted(seed, rules=1, destructive=destructive, additive=additive,
                              support=(0.08, 0.2), p=(0.01, density))
    rules = mine({"a": d_a, "b": d_b}, max_rules=1, **FAST)
    (head, tail), = truth
    (_, jaccard), = match(rules, truth)
    found = tuple(rules.rules[0].head.tolist())
    # The head exactly, or (sparse backgrounds) a cheaper sub-head on exactly the same rows.
    rows = lambda h: d_a[:, list(h)].all(axis=1)
    assert found == head or (set(found) < set(head) and (rows(found) == rows(head)).all())
    assert set(rules.rules[0].tail.tolist()) <= set(tail) and jaccard >= 0.8


def test_rule_set_is_an_immutable_pytree_with_text_and_histograms(tmp_path):
    d_a, d_b, truth = planted(1, rules=2)
    labels = np.zeros(d_a.shape[0], np.int64)
    labels[d_a[:, list(truth[0][0])].all(1)] = 1  # class 1 = rows with the first head
    rules = mine({"a": d_a, "b": d_b}, labels=labels, **FAST)
    assert isinstance(rules, RuleSet) and len(rules) >= 2
    leaves, treedef = jax.tree.flatten(rules)
    again = jax.tree.unflatten(treedef, leaves)
    assert [str(r) for r in again.rules] == [str(r) for r in rules.rules]
    assert again.dropped == rules.dropped and again.num_rows == rules.num_rows
    doubled = jax.tree.map(lambda v: v * 2, rules)
    assert float(doubled.code_length) == 2 * float(rules.code_length)
    assert str(jax.jit(lambda rs: rs)(rules)) == str(rules)           # passes through jit
    with ocp.StandardCheckpointer() as checkpointer:                   # and through orbax
        checkpointer.save(tmp_path / "rules", rules)
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "rules", rules)
    assert isinstance(restored, RuleSet) and str(restored) == str(rules)
    np.testing.assert_array_equal(restored.class_histograms, rules.class_histograms)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rules.code_length = 0.0
    with pytest.raises(ValueError, match="read-only"):
        rules.rules[0].head[0] = 99
    first = rules.rules[0]
    text = str(first)
    assert text.startswith(f"a[{','.join(map(str, first.head.tolist()))}] -> b[")
    usage = f"usage {int(first.usage)}/{int(first.support)}"
    assert f"support {int(first.support)}  {usage}  conf " in text
    assert f"{usage}  conf {float(first.confidence):.2f}  usage classes " in str(rules)
    table = rules.to_table()
    assert len(table.rows) == len(rules) and table.header[-1] == "top classes"
    # Class histograms count the usage rows: the first planted rule is class-specific.
    hist = np.asarray(rules.class_histograms)
    layers = {"a": d_a, "b": d_b}
    for rule, row in zip(rules.rules, hist):
        assert row.sum() == rule_rows(rule, layers).sum() == int(rule.usage)
    i = [k for k, r in enumerate(rules.rules) if tuple(r.head.tolist()) == truth[0][0]][0]
    assert specificity(rules)[i] == 1.0
    assert str(rules).count("\n") == len(rules)


def test_constant_columns_are_dropped_and_reported():
    d_a, d_b, _ = planted(2, rules=1)
    d_a = np.concatenate([d_a, np.ones((d_a.shape[0], 1), bool)], axis=1)
    d_b = np.concatenate([np.zeros((d_b.shape[0], 1), bool), d_b], axis=1)
    rules = mine({"a": d_a, "b": d_b}, **FAST)
    assert dict(rules.dropped) == {"a": (d_a.shape[1] - 1,), "b": (0,)}
    assert all(0 not in r.tail.tolist() for r in rules.rules)


@pytest.mark.parametrize("layers, match_text", [
    ({"a": np.ones((4, 3), bool)}, "at least two layers"),
    ({"a": np.full((4, 3), 0.5), "b": np.ones((4, 2), bool)}, "must be boolean"),
    ({"a": np.array([["x"]]), "b": np.ones((1, 2), bool)}, "must be boolean"),
    ({"a": np.ones((4, 3), bool), "b": np.ones((5, 2), bool)}, "same number of rows"),
    ({"a": np.ones((0, 3), bool), "b": np.ones((0, 2), bool)}, "empty data"),
    ({"a": np.ones((4,), bool), "b": np.ones((4, 2), bool)}, "must be 2-D"),
])
def test_bad_layers_raise_clear_errors(layers, match_text):
    with pytest.raises(ValueError, match=match_text):
        mine(layers)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.float64, np.uint8])
def test_zero_one_matrices_are_refused_with_the_astype_fix(dtype):
    # Only bool is accepted, but a 0/1 matrix is one .astype(bool) away: the message says so.
    fc = np.eye(4, dtype=dtype)
    with pytest.raises(ValueError) as error:
        mine({"conv": np.eye(4, dtype=bool), "fc": fc})
    assert str(error.value) == (f"layer 'fc' has dtype {np.dtype(dtype)} with only 0/1 values: "
                                f"pass layer.astype(bool)")
    assert len(mine({"conv": np.eye(4, dtype=bool), "fc": fc.astype(bool)})) == 0


def test_a_layer_with_only_constant_columns_is_warned_about_and_shown():
    # All of layer 'a' constant (2 never on, 1 always on): no rule can use it; mine warns
    # naming the layer and the counts, and str(RuleSet) says so under its header.
    rng = np.random.default_rng(3)
    d_a = np.zeros((200, 3), bool)
    d_a[:, 1] = True
    d_b = rng.random((200, 4)) < 0.3
    with pytest.warns(UserWarning, match=r"every column of layer 'a' is constant \(2 never on, "
                                         r"1 always on over the 200 rows\)"):
        rules = mine({"a": d_a, "b": d_b}, **FAST)
    assert rules.widths == (("a", 3), ("b", 4)) and dict(rules.dropped)["a"] == (0, 1, 2)
    lines = str(rules).splitlines()
    assert lines[1] == "  layer 'a': all 3 columns constant (dropped): no rule can use it"
    assert "layer 'b'" not in str(rules)
    leaves, treedef = jax.tree.flatten(rules)
    assert str(jax.tree.unflatten(treedef, leaves)) == str(rules)
    # A layer with only some constant columns (dead units) is reported in .dropped only.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        partial = mine({"a": np.concatenate([d_a, d_b[:, :1]], 1), "b": d_b}, **FAST)
    assert dict(partial.dropped)["a"] == (0, 1, 2) and "constant" not in str(partial)


def test_bad_options_raise_clear_errors():
    layers = {"a": np.eye(4, dtype=bool), "b": np.eye(4, dtype=bool), "c": np.eye(4, dtype=bool)}
    with pytest.raises(ValueError, match="unknown option"):
        mine(layers, k_tails=3)
    with pytest.raises(ValueError, match="cycle"):
        mine(layers, pairs=[("a", "b"), ("b", "c"), ("c", "a")])
    with pytest.raises(ValueError, match="unknown layer"):
        mine(layers, pairs=[("a", "z")])
    with pytest.raises(ValueError, match="tail_mode"):
        mine(layers, tail_mode="fuzzy")
    with pytest.raises(ValueError, match="labels"):
        mine(layers, labels=np.zeros(3, int))


def test_three_layers_mine_every_forward_pair_and_respect_pairs():
    d_a, d_b, truth = planted(4, rules=1, n=1000)
    d_c = np.random.default_rng(99).random((1000, 24)) < 0.1   # independent of a and b
    layers = {"a": d_a, "mid": d_c, "b": d_b}   # the planted rule goes a -> b (skips "mid")
    rules = mine(layers, **FAST)
    (head, tail), = truth
    assert [(r.head_layer, r.tail_layer) for r in rules.rules] == [("a", "b")]
    assert tuple(rules.rules[0].head.tolist()) == head
    allowed = [("a", "mid"), ("mid", "b")]
    only = mine(layers, pairs=allowed, **FAST)
    assert all((r.head_layer, r.tail_layer) in allowed for r in only.rules)
    assert float(only.code_length) > float(rules.code_length)  # the true head is out of reach


def test_text_shows_usage_next_to_the_usage_class_histogram():
    # A rule that holds on 15 of its 200 head rows, all class 1: the text must not read as a
    # class-1-specific head (the histogram counts the 15 usage rows only).
    from jaxplain.rules import Rule

    rule = Rule(head=np.array([3]), tail=np.array([5, 9]), support=np.array(200),
                usage=np.array(15), min_hits=np.array(2), confidence=np.array(0.15),
                gain=np.array(-4.0), head_layer="conv", tail_layer="fc")
    assert str(rule) == "conv[3] -> fc[5,9]  support 200  usage 15/200  conf 0.15"
    rules = RuleSet(rules=(rule,), code_length=np.array(90.0),
                    baseline_code_length=np.array(100.0),
                    class_histograms=np.array([[0, 15, 0, 0]]), num_rows=500)
    assert str(rules).splitlines()[1] == (
        "  conv[3] -> fc[5,9]  support 200  usage 15/200  conf 0.15  usage classes 1:100%")


def test_empty_class_buckets_are_not_printed():
    # "usage classes 0:99% 2:0% 1:0%" said nothing with its 0% buckets.
    from jaxplain.rules import Rule

    rule = Rule(head=np.array([0]), tail=np.array([1]), support=np.array(1000),
                usage=np.array(1000), min_hits=np.array(1), confidence=np.array(1.0),
                gain=np.array(-4.0), head_layer="a", tail_layer="b")
    hist = np.array([[990, 2, 8], [996, 3, 1], [4, 3, 3]])
    rules = RuleSet(rules=(rule,) * 3, code_length=np.array(90.0),
                    baseline_code_length=np.array(100.0), class_histograms=hist, num_rows=1000)
    lines = str(rules).splitlines()[1:]
    assert [line.split("usage classes ")[1] for line in lines] == [
        "0:99% 2:1%", "0:100%", "0:40% 1:30% 2:30%"]
    assert [row[-1] for row in rules.to_table().rows] == ["0:99% 2:1%", "0:100%",
                                                          "0:40% 1:30% 2:30%"]
    # With many classes the top class shows even when it rounds to 0%.
    many = RuleSet(rules=(rule,), code_length=np.array(90.0),
                   baseline_code_length=np.array(100.0),
                   class_histograms=np.ones((1, 300), np.int64), num_rows=300)
    assert str(many).splitlines()[1].endswith("usage classes 0:0%")


def test_a_search_stopped_by_its_time_budget_says_so(monkeypatch):
    from jaxplain.rules import _search

    d_a, d_b, _ = planted(5, rules=3)
    layers = {"a": d_a, "b": d_b}
    full = mine(layers, **FAST)
    assert full.complete and full.stopped_by is None and "INCOMPLETE" not in str(full)
    assert len(full) >= 2
    # A fake clock that moves 100 s per accepted rule: the budget runs out after one rule.
    clock = [0.0]
    monkeypatch.setattr(_search, "time", type("Clock", (), {"monotonic": lambda: clock[0]}))
    tick = lambda rule: clock.__setitem__(0, clock[0] + 100.0)
    with pytest.warns(RuntimeWarning, match=r"time_budget=50 s with 1 rules; more rules may"):
        cut = mine(layers, time_budget=50, callback=tick, **FAST)
    assert not cut.complete and cut.stopped_by == "time_budget"
    assert [str(r) for r in cut.rules] == [str(full.rules[0])]        # a prefix of the full
    header = str(cut).splitlines()[0]
    assert header.endswith("INCOMPLETE: stopped by time_budget (more rules may compress)")
    leaves, treedef = jax.tree.flatten(cut)
    assert jax.tree.unflatten(treedef, leaves).stopped_by == "time_budget"
    # The budget is also checked between device calls inside one rule's search.
    clock[0] = 0.0
    calls = []
    real = _search._kernel.score

    def slow(*args, **kwargs):
        calls.append(1)
        clock[0] += 100.0
        return real(*args, **kwargs)

    monkeypatch.setattr(_search._kernel, "score", slow)
    with pytest.warns(RuntimeWarning, match="with 0 rules"):
        none = mine(layers, time_budget=50, **FAST)
    assert len(none) == 0 and none.stopped_by == "time_budget" and len(calls) == 1
    monkeypatch.undo()
    # max_rules is recorded but not warned about: the user asked for it.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        capped = mine(layers, max_rules=1, **FAST)
    assert capped.stopped_by == "max_rules" and not capped.complete
    assert "INCOMPLETE: stopped by max_rules" in str(capped)
