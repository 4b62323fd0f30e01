"""Tail search with ``tail_order="both"``: every prefix of two tail rankings, by confidence
(the spec's) and by one-item gain, is scored, and the better gain wins (checked against the
float64 reference); the default ``"confidence"`` scores the first ranking only."""

import jax
import numpy as np
import pytest

from jaxplain.rules import _bits, _checkpoint, _search, mine
from tests.rules import _reference as ref
from tests.rules._planted import planted


def best_prefix(d_a, d_b, cover, n_rules, head, k_tail, robust=True, orders=("confidence",
                                                                            "gain")):
    """The best (gain, tail, k) over every prefix of the tail rankings ``orders``, one
    candidate at a time (float64 reference gains): by confidence (uncovered ones in the head
    rows; ties: the lower index), and by the gain of each one-item rule X -> {y} (ties: more
    uncovered ones in the head rows, then the lower index). Ties between candidates: the
    earlier ranking, larger k, then the shorter tail."""
    rows = d_a[:, list(head)].all(1)
    co = (d_b & ~cover)[rows].sum(0)
    alone = [ref.gain(d_a, d_b, cover, n_rules, head, (y,), 1, robust)
             for y in range(d_b.shape[1])]
    rank = {"confidence": lambda y: (-co[y], y), "gain": lambda y: (alone[y], -co[y], y)}
    best = (np.inf, None, None)
    for order in orders:
        ranked = sorted(range(d_b.shape[1]), key=rank[order])[:k_tail]
        for j in range(1, len(ranked) + 1):
            tail = tuple(sorted(ranked[:j]))
            for k in (range(j, 0, -1) if robust else [j]):
                value = ref.gain(d_a, d_b, cover, n_rules, head, tail, k, robust)
                if value < best[0]:
                    best = (value, tail, k)
    return best


def _search_with_cover(d_a, d_b, cover, tail_mode, k_tail, tail_order="both"):
    config = _search.SearchConfig(tail_mode=tail_mode, k_tail=k_tail, batch_size=16,
                                  tail_order=tail_order)
    search = _search._Search({"a": d_a, "b": d_b}, d_a.shape[0], (("a", "b"),), config,
                             jax.devices()[:1])
    assert search.data["b"].shape == d_b.shape
    search.cover["b"] = cover
    search.residual_counts["b"] = (d_b & ~cover).sum(0)
    search.device_residual["b"] = search._put(_bits.pack(d_b & ~cover, search.words), True)
    return search


def _dense_and_rare(seed, n=1000):
    """Head a[0] -> b[0, 1, 2] planted (on in 85% of the head rows), b[10] on in 97% of all
    rows (in more head rows than the planted items), b[20:] on in ~3 rows each (if any)."""
    rng = np.random.default_rng(seed)
    d_a = rng.random((n, 3)) < 0.05
    d_a[:, 0] = rng.random(n) < 0.1
    d_b = rng.random((n, 30)) < 0.05
    d_b[:, 10] = rng.random(n) < 0.97
    d_b[:, 20:] = rng.random((n, 10)) < 0.003
    d_b[np.ix_(d_a[:, 0], [0, 1, 2])] |= rng.random((d_a[:, 0].sum(), 3)) < 0.85
    return d_a, d_b[:, d_b.any(0)]     # no constant column: L_rule counts the kept ones


@pytest.mark.parametrize("seed, tail_mode", [(0, "robust"), (1, "robust"), (2, "exact")])
def test_each_head_gets_the_best_prefix_of_both_rankings(seed, tail_mode):
    rng = np.random.default_rng(seed)
    d_a = rng.random((240, 9)) < rng.uniform(0.2, 0.6, 9)
    d_b = rng.random((240, 11)) < rng.uniform(0.1, 0.9, 11)
    d_b[d_a[:, 0] & d_a[:, 1], :5] |= rng.random((240, 5))[d_a[:, 0] & d_a[:, 1]] < 0.8
    cover = (rng.random(d_b.shape) < 0.3) & d_b
    heads = [(0,), (1,), (0, 1), (2, 5), (3, 4, 8), (6,), (7, 8), (0, 1, 2)]
    robust = tail_mode == "robust"
    with jax.enable_x64(True):
        scored = _search_with_cover(d_a, d_b, cover, tail_mode, 8).score(0, heads)
    better = 0
    for cand in scored:
        expected, tail, k = best_prefix(d_a, d_b, cover, 0, cand.head, 8, robust)
        assert cand.gain == pytest.approx(expected, rel=1e-12, abs=1e-9), cand.head
        assert (cand.tail, cand.min_hits) == (tail, k), cand.head
        spec = best_prefix(d_a, d_b, cover, 0, cand.head, 8, robust, ("confidence",))[0]
        assert cand.gain <= spec + 1e-9
        better += cand.gain < spec - 1e-6
    assert better >= 1   # the second ranking matters on these heads


@pytest.mark.parametrize("seed", [0, 1])
def test_a_dense_unrelated_unit_and_rare_units_stay_out_of_the_planted_tail(seed):
    # Confidence ranks b[10] (dense everywhere) before the planted items, lift would rank the
    # rare units first; the one-item gain ranks the planted items first.
    d_a, d_b = _dense_and_rare(seed)
    rules = mine({"a": d_a[:, :1], "b": d_b}, k_tail=30, tail_order="both")
    rule = rules.rules[0]
    assert tuple(rule.tail.tolist()) == (0, 1, 2)
    layers = (d_a[:, :1], d_b)
    base = ref.total_length(layers, [])
    planted = min(ref.total_length(layers, [((0,), (0, 1, 2), k)]) - base for k in (1, 2, 3))
    assert float(rule.gain) == pytest.approx(planted, abs=1e-6)
    with_dense = min(ref.total_length(layers, [((0,), (0, 1, 2, 10), k)]) - base
                     for k in (1, 2, 3, 4))
    assert planted < with_dense - 100     # what the confidence ranking alone accepted


def _dense_unrelated(n=2000):
    """The trial's repro: a[0] -> b[0, 1, 2] planted (95% of the head rows), b[10] on in 90%
    of all rows (in one head row more than b[0])."""
    rng = np.random.default_rng(0)
    d_a = rng.random((n, 10)) < 0.05
    d_b = rng.random((n, 12)) < 0.05
    d_a[:, 9] = rng.random(n) < 0.6
    d_b[:, 11] = rng.random(n) < 0.6
    d_b[:, 10] = rng.random(n) < 0.9
    d_b[np.ix_(d_a[:, 0], [0, 1, 2])] |= rng.random((d_a[:, 0].sum(), 3)) < 0.95
    return d_a[:, :1], d_b


def test_the_default_ranks_by_confidence_and_both_finds_the_better_rule():
    d_a, d_b = _dense_unrelated()
    layers = (d_a, d_b)
    base = ref.total_length(layers, [])
    best = lambda tail: min(ref.total_length(layers, [((0,), tail, k)]) - base
                            for k in range(1, len(tail) + 1))
    found = {}
    for options in ({}, {"tail_order": "confidence"}, {"tail_order": "both"}):
        rule = mine({"a": d_a, "b": d_b}, k_tail=12, max_rules=1, **options).rules[0]
        found[options.get("tail_order", "default")] = (tuple(rule.tail.tolist()),
                                                       float(rule.gain))
    assert found["default"] == found["confidence"]
    assert found["default"][0] == (0, 1, 2, 10)        # b[10] ranks before b[0] by confidence
    assert found["default"][1] == pytest.approx(best((0, 1, 2, 10)), abs=1e-6)   # -581.0 bits
    assert found["both"][0] == (0, 1, 2)
    assert found["both"][1] == pytest.approx(best((0, 1, 2)), abs=1e-6)          # -854.6 bits
    assert found["both"][1] < found["default"][1] - 200


def test_tail_order_is_checked_and_stamped_in_checkpoints(tmp_path):
    d_a, d_b, _ = planted(3, rules=3)
    layers, fast = {"a": d_a, "b": d_b}, dict(k_tail=16, beam=16, k_head=8, batch_size=16)
    with pytest.raises(ValueError, match=r"tail_order must be 'confidence' or 'both', got 'gain'"):
        mine(layers, tail_order="gain", **fast)
    directory = str(tmp_path / "ck")
    full = mine(layers, tail_order="both", **fast)
    assert len(full) == 3
    mine(layers, tail_order="both", max_rules=1, checkpoint_dir=directory, **fast)
    with pytest.raises(ValueError, match=r"other options \(tail_order='both' there, "
                                         r"'confidence' here\)"):
        mine(layers, checkpoint_dir=directory, **fast)
    resumed = mine(layers, tail_order="both", checkpoint_dir=directory, **fast)
    assert [(r.tail.tolist(), float(r.gain)) for r in resumed.rules] == \
        [(r.tail.tolist(), float(r.gain)) for r in full.rules]


def test_a_stamp_from_before_tail_order_is_the_confidence_search():
    # Checkpoints written before the option existed searched by confidence only.
    here = {t: _checkpoint.fingerprint([np.zeros(3)], {"k_tail": 16, "tail_order": t})
            for t in ("confidence", "both")}
    older = {k: v for k, v in here["confidence"].items() if k != "tail_order"}
    assert _checkpoint._differences(older, here["confidence"]) == []
    assert _checkpoint._differences(older, here["both"]) == [
        "tail_order='confidence' there, 'both' here"]
