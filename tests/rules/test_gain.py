"""The batched device gains equal a straightforward float64 NumPy reference (spec §3.5, §9)."""

import jax
import numpy as np
import pytest

from jaxplain.rules import _bits, _search, mine
from tests.rules import _reference as ref
from tests.rules._planted import planted


def _random_layers(seed, n=240, m_a=9, m_b=11):
    rng = np.random.default_rng(seed)
    d_a = rng.random((n, m_a)) < rng.uniform(0.2, 0.6, m_a)
    d_b = rng.random((n, m_b)) < rng.uniform(0.1, 0.7, m_b)
    d_b[d_a[:, 0] & d_a[:, 1], :5] |= rng.random((n, 5))[d_a[:, 0] & d_a[:, 1]] < 0.8
    return d_a, d_b


def _search_with_cover(d_a, d_b, cover, tail_mode, k_tail):
    config = _search.SearchConfig(tail_mode=tail_mode, k_tail=k_tail, batch_size=16)
    search = _search._Search({"a": d_a, "b": d_b}, d_a.shape[0], (("a", "b"),), config,
                             jax.devices()[:1])
    assert search.data["b"].shape == d_b.shape  # no constant columns were dropped
    search.cover["b"] = cover
    search.residual_counts["b"] = (d_b & ~cover).sum(0)
    search.device_residual["b"] = search._put(_bits.pack(d_b & ~cover, search.words), True)
    return search


@pytest.mark.parametrize("seed, tail_mode", [(0, "robust"), (1, "robust"), (2, "exact")])
def test_batched_gain_equals_numpy_reference(seed, tail_mode):
    d_a, d_b = _random_layers(seed)
    rng = np.random.default_rng(100 + seed)
    cover = (rng.random(d_b.shape) < 0.3) & d_b  # some cells already covered
    heads = [(0,), (1,), (0, 1), (2, 5), (3, 4, 8), (6,), (7, 8), (0, 1, 2)]
    k_tail = 8
    with jax.enable_x64(True):
        search = _search_with_cover(d_a, d_b, cover, tail_mode, k_tail)
        scored = search.score(0, heads)
    robust = tail_mode == "robust"
    for cand in scored:
        expected, tail, k = ref.best_rule(d_a, d_b, cover, 0, cand.head, k_tail, robust)
        assert cand.gain == pytest.approx(expected, rel=1e-12, abs=1e-9), cand.head
        assert (cand.tail, cand.min_hits) == (tail, k), cand.head
        # The device's counts agree with the dense recount of the chosen rule.
        rows, used, hits = ref.usage(d_a, d_b, cand.head, cand.tail, cand.min_hits)
        zeros = int((len(cand.tail) - hits[used]).sum())
        assert cand.counts == (rows.sum(), used.sum(), zeros)


def test_accept_checks_the_gain_against_the_real_drop_in_code_length():
    # The search recomputes L(D, M) from scratch on every acceptance: a gain off by 1e-5 bits
    # (10x the tolerance) or device counts off by one row raise.
    d_a, d_b, ((head, _),) = planted(6, rules=1)
    empty = np.zeros_like(d_b)
    with jax.enable_x64(True):
        search = _search_with_cover(d_a, d_b, empty, "robust", 8)
        cand, = search.score(0, [head])
        rule = (cand.head, cand.tail, cand.min_hits)
        real = ref.total_length((d_a, d_b), [rule]) - ref.total_length((d_a, d_b), [])
        assert cand.gain == pytest.approx(real, abs=1e-9) and cand.gain < 0
        search.accept(0, *rule, cand.gain, cand.counts)
        assert search.total - search.baseline == pytest.approx(real, abs=1e-9)
        with pytest.raises(AssertionError, match="real change"):
            _search_with_cover(d_a, d_b, empty, "robust", 8).accept(0, *rule, cand.gain + 1e-5,
                                                                    cand.counts)
        support, usage, zeros = cand.counts
        with pytest.raises(AssertionError, match="device counts"):
            _search_with_cover(d_a, d_b, empty, "robust", 8).accept(0, *rule, cand.gain,
                                                                    (support, usage + 1, zeros))


def test_reference_gain_is_difference_of_total_lengths():
    # Spec §9: Delta L equals L(D, M + r) - L(D, M), for a second rule overlapping the first.
    d_a, d_b = _random_layers(3, n=200, m_a=6, m_b=10)
    first = ((0, 1), (0, 1, 2, 3, 4), 3)
    base = ref.total_length((d_a, d_b), [first])
    _, used, _ = ref.usage(d_a, d_b, *first)
    cover = np.zeros_like(d_b)
    cover[np.ix_(used, list(first[1]))] = True
    for k in (1, 2, 3, 4):
        second = ((0,), (2, 3, 4, 5, 6), k)
        delta = ref.gain(d_a, d_b, cover, 1, *second)
        assert delta == pytest.approx(ref.total_length((d_a, d_b), [first, second]) - base,
                                      abs=1e-9)


@pytest.mark.parametrize("tail_mode, set_code", [("robust", "universal"), ("exact", "universal"),
                                                ("robust", "premise")])
def test_mined_code_length_equals_reference_total(tail_mode, set_code):
    d_a, d_b = _random_layers(4, n=300)
    rules = mine({"a": d_a, "b": d_b}, tail_mode=tail_mode, set_code=set_code, k_tail=8, beam=8,
                 k_head=4, min_tail_frac=0.5 if set_code == "premise" else 0.0)
    assert len(rules) >= 1
    as_ref = [(tuple(r.head), tuple(r.tail), int(r.min_hits)) for r in rules.rules]
    robust = tail_mode == "robust"
    assert float(rules.code_length) == pytest.approx(
        ref.total_length((d_a, d_b), as_ref, robust, set_code), abs=1e-6)
    if set_code == "premise":   # min_tail_frac=0.5: rules use rows with >= half the tail
        assert all(2 * int(r.min_hits) >= len(r.tail) for r in rules.rules)
    assert float(rules.baseline_code_length) == pytest.approx(
        ref.total_length((d_a, d_b), [], robust), abs=1e-6)
    gains = sum(float(r.gain) for r in rules.rules)
    assert float(rules.code_length) - float(rules.baseline_code_length) == pytest.approx(gains,
                                                                                        abs=1e-6)


def test_search_does_not_retrace():
    from jaxplain.rules import _kernel

    before = _kernel.score._cache_size()
    d_a, d_b = _random_layers(4, n=300)
    assert len(mine({"a": d_a, "b": d_b}, k_tail=8, beam=8, k_head=4)) >= 1
    compiled = _kernel.score._cache_size()
    assert compiled - before <= 1            # every batch of the search shares one compilation
    d_a, d_b = _random_layers(5, n=300)      # same shapes, other data: no new compilation
    mine({"a": d_a, "b": d_b}, k_tail=8, beam=8, k_head=4)
    assert _kernel.score._cache_size() == compiled
