"""A target sparsity keeps about the promised number of units (at least that many when they
connect, zero scores included), never an empty sub-network, and warns when it keeps fewer; the
batch-dependence warning comes once per extract; the unscaled agreement is reported."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import subnet
from jaxplain.subnet import _extract, _threshold
from jaxplain.subnet._types import Options
from tests.subnet import _nets

NO_GAIN = {n: jnp.zeros((1, 24)) for n in _nets.SITES}


def _params(top):
    """Candidate scores ``{site: (1, 24)}`` of the planted net: 1 everywhere, larger at ``top``
    (``{(site, channel): score}``); gates open."""
    scores = {n: jnp.ones((1, 24)) for n in _nets.SITES}
    for (n, c), s in top.items():
        scores[n] = scores[n].at[0, c].set(s)
    return {"scores": scores, "theta": {n: jnp.full((1,), 5.0) for n in _nets.SITES}}


def test_high_target_sparsity_grows_the_ranking_into_a_chain():
    f, x, _ = _nets.planted()
    # The two top-ranked units are both in conv2: alone they neither depend on the input (conv1
    # is empty) nor reach the output (conv3 is empty), so the closure removes them.
    params = _params({("conv2", 0): 3.0, ("conv2", 1): 3.0, ("conv1", 0): 2.0,
                      ("conv3", 0): 2.0})
    sparsity = 0.97  # 72 units: the target is 2
    assert _threshold.target_units(sparsity, 72) == 2
    naive = _threshold.closure(f, _threshold.by_rank(params, sparsity, 0.5, NO_GAIN, 0.01), x,
                               jax.random.key(0))
    assert int(_threshold.count(naive)[0]) == 0
    kept = _threshold.by_rank_closed(f, params, x, jax.random.key(0), sparsity, 0.5, NO_GAIN,
                                     0.01)
    got = {n: np.flatnonzero(np.asarray(kept[n][0])).tolist() for n in _nets.SITES}
    # The shortest ranked prefix whose closure keeps >= 2 units: conv1 0 -> conv2 0, 1 -> conv3 0.
    assert got == {"conv1": [0], "conv2": [0, 1], "conv3": [0]}


def _sparse_params(positive):
    """Candidate scores of the planted net that are exactly 0 but at ``positive`` (a search
    with a large L1 weight ends so); gates open."""
    scores = {n: jnp.zeros((1, 24)) for n in _nets.SITES}
    for n, c in positive:
        scores[n] = scores[n].at[0, c].set(2.0)
    return {"scores": scores, "theta": {n: jnp.full((1,), 5.0) for n in _nets.SITES}}


def test_ranking_takes_zero_scores_by_gain_to_reach_the_target():
    f, x, _ = _nets.planted(0.01)
    chain = [("conv1", 0), ("conv2", 0), ("conv3", 0)]
    params = _sparse_params(chain)
    # Only 3 positive scores, target 36 of 72: the old ranking stopped at those 3.
    kept = _threshold.by_rank_closed(f, params, x, jax.random.key(0), 0.5, 0.5, NO_GAIN, 0.01)
    assert int(_threshold.count(kept)[0]) == 36
    # Among the zero scores the largest gain comes first, then the position.
    gain = dict(NO_GAIN, conv3=NO_GAIN["conv3"].at[0, 7].set(1e-3))
    top = _threshold.by_rank(params, 1 - 4 / 72, 0.5, gain, 0.01)  # target 4
    got = {n: np.flatnonzero(np.asarray(top[n][0])).tolist() for n in _nets.SITES}
    assert got == {"conv1": [0], "conv2": [0], "conv3": [0, 7]}
    top = _threshold.by_rank(params, 1 - 4 / 72, 0.5, NO_GAIN, 0.01)
    got = {n: np.flatnonzero(np.asarray(top[n][0])).tolist() for n in _nets.SITES}
    assert got == {"conv1": [0, 1], "conv2": [0], "conv3": [0]}


def test_choice_prefers_candidates_at_or_above_the_target():
    f, x, _ = _nets.planted(0.01)
    logp = jax.nn.log_softmax(f(x), axis=-1)
    # Candidate 0 keeps 6 units, candidate 1 keeps 40; the target is 36 (sparsity 0.5).
    small = {n: jnp.arange(24) < 2 for n in _nets.SITES}
    large = dict(small, conv1=jnp.ones(24, bool), conv2=jnp.arange(24) < 14)
    masks = {n: jnp.stack([small[n], large[n]]) for n in _nets.SITES}
    tuned = {"scores": {n: jnp.ones((2, 24)) for n in _nets.SITES},
             "theta": {n: jnp.full((2,), 5.0) for n in _nets.SITES}}
    opts = Options(sparsity=0.5, l1=(1e-3, 1e-2))
    fields, _ = _extract._choose(tuned, masks, jnp.zeros(2), jnp.asarray(opts.l1), x, logp,
                                 f=f, opts=opts)
    assert int(_threshold.count(fields["masks"])) == 40  # not the 6 closer below


def test_extract_keeps_the_target_size_when_most_scores_are_zero():
    f, x, _ = _nets.planted(0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # l1=1e-2 leaves most scores at exactly 0: the old ranking, positive scores only,
        # kept 6 units (sparsity 0.917), silently.
        sub = subnet.extract(f, x, sites=_nets.SITES, key=jax.random.key(0), sparsity=0.5,
                             l1=1e-2, **_nets.FAST)
    # Target 36 of 72; every unit of this net connects, so 36 is the smallest count >= target.
    assert sum(sub.kept_units.values()) == 36, sub.kept_units
    assert sub.sparsity == 0.5
    # Fine-tuning removed none of them: every kept unit has a positive multiplier.
    mult = sub.multipliers()
    assert all(bool(jnp.all((mult[n] > 0) == sub.masks[n])) for n in sub.sites)
    assert not [w for w in caught if "keeps only" in str(w.message)]


def test_extract_warns_when_it_keeps_fewer_units_than_the_target():
    f, x, _ = _nets.planted(0.0)  # only the 6 planted units reach the output
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sub = subnet.extract(f, x, sites=_nets.SITES, key=jax.random.key(0), sparsity=0.5,
                             l1=1e-2, **_nets.FAST)
    assert sum(sub.kept_units.values()) == 6
    short = [w for w in caught if "keeps only 6" in str(w.message)]
    assert len(short) == 1 and "the target is 36 of 72" in str(short[0].message)
    assert short[0].filename == __file__


def test_extract_at_high_sparsity_is_a_chain_of_about_the_target_size():
    f, x, _ = _nets.planted(0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sub = subnet.extract(f, x, sites=_nets.SITES, key=jax.random.key(0), sparsity=0.97,
                             l1=(1e-3, 1e-2), **_nets.FAST)
    kept = sub.kept_units
    # Target 2 of 72; a path through the three layers needs at least one unit in each.
    assert all(k >= 1 for k in kept.values()), kept
    assert 3 <= sum(kept.values()) <= 4, kept
    assert not any("empty" in str(w.message) for w in caught)
    # The same units as a plain 0/1 mask: measured, and reported by summary().
    plain = subnet.SubNetwork(
        masks=sub.masks, scores={n: jnp.ones(24) for n in sub.sites},
        gates={n: jnp.ones(()) for n in sub.sites}, region_agreement=sub.region_agreement,
        region_kl=sub.region_kl, l1=sub.l1, threshold=sub.threshold, sites=sub.sites)
    expected = float(subnet.fidelity(f, plain, x).agreement)
    assert float(sub.unscaled_agreement) == expected
    assert f"unscaled (a 0/1 mask, no scores or gates): region agreement {100 * expected:.1f}%" \
        in sub.summary()


def test_batch_dependence_is_warned_once_per_call():
    f0, x, _ = _nets.planted()

    def f(z):  # batch statistics: the output of one sample depends on the others
        return f0(z - jnp.mean(z, axis=0))

    for _ in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            subnet.extract(f, x, sites="conv1", key=jax.random.key(0), steps=5,
                           finetune_steps=2, l1=(1e-2,), fidelity=0.0)
        batch = [w for w in caught if "depends on the other examples" in str(w.message)]
        assert len(batch) == 1, [str(w.message)[:60] for w in caught]
        assert batch[0].filename == __file__
