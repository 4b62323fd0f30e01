"""A target sparsity keeps about the promised number of units, never an empty sub-network; the
batch-dependence warning comes once per extract; the unscaled agreement is reported."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import subnet
from jaxplain.subnet import _threshold
from tests.subnet import _nets


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
    naive = _threshold.closure(f, _threshold.by_rank(params, sparsity, 0.5), x,
                               jax.random.key(0))
    assert int(_threshold.count(naive)[0]) == 0
    kept = _threshold.by_rank_closed(f, params, x, jax.random.key(0), sparsity, 0.5)
    got = {n: np.flatnonzero(np.asarray(kept[n][0])).tolist() for n in _nets.SITES}
    # The shortest ranked prefix whose closure keeps >= 2 units: conv1 0 -> conv2 0, 1 -> conv3 0.
    assert got == {"conv1": [0], "conv2": [0, 1], "conv3": [0]}


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
