"""A target sparsity keeps its size promise (the target plus at most one connecting unit per
scored site, when that many connect), and a search that lost the region's labels early is
warned about instead of silently returning a barely pruned sub-network."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import subnet
from jaxplain.subnet import _optimize, _threshold
from tests.subnet import _nets

NO_GAIN = {n: jnp.zeros((1, 24)) for n in _nets.SITES}


def test_a_ranked_prefix_far_above_the_target_is_pruned_to_a_chain():
    f, x, _ = _nets.planted(0.01)  # every unit connects
    # conv1 ranks last, so the shortest prefix whose closure connects takes every unit of
    # conv2 and conv3 first: 49 units for a target of 2 (kept before, silently).
    rising = jnp.arange(24) / 100
    params = {"scores": {"conv1": jnp.full((1, 24), 0.5), "conv2": (2.0 + rising)[None],
                         "conv3": (3.0 + rising)[None]},
              "theta": {n: jnp.full((1,), 5.0) for n in _nets.SITES}}
    sparsity = 0.97
    assert _threshold.target_units(sparsity, 72) == 2
    prefix = _threshold.closure(f, _threshold.by_rank(params, 1 - 49.5 / 72, 0.5, NO_GAIN, 0.01),
                                x, jax.random.key(0))
    assert int(_threshold.count(prefix)[0]) > 2 + 3  # far above: the target and a unit a site
    kept = _threshold.by_rank_closed(f, params, x, jax.random.key(0), sparsity, 0.5, NO_GAIN,
                                     0.01)
    got = {n: np.flatnonzero(np.asarray(kept[n][0])).tolist() for n in _nets.SITES}
    # A plain chain needs one unit per layer: the first-ranked of each stays.
    assert got == {"conv1": [0], "conv2": [23], "conv3": [23]}


W1 = jax.random.normal(jax.random.key(0), (6, 16))
W2 = 0.5 * jax.random.normal(jax.random.key(10), (16, 3))


def _f(x):
    with jax.named_scope("hidden"):
        h = x @ W1
    return jax.nn.relu(h) @ W2


def _region():
    """The 12 of 40 random inputs that ``_f`` classifies with the largest margins."""
    x = 2 * jax.random.normal(jax.random.key(2), (40, 6))
    p = jnp.sort(jax.nn.softmax(_f(x)), axis=-1)
    return x[jnp.argsort(p[:, -2] - p[:, -1])[:12]]


X = _region()


def _early(l1):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sub = subnet.extract(_f, X, sites="hidden", key=jax.random.key(0), l1=l1, steps=150,
                             finetune_steps=30)
    return sub, [w for w in caught if "too large" in str(w.message)]


def test_an_l1_that_loses_the_labels_early_is_warned_about():
    small, none = _early(1e-3)
    assert not none
    large, said = _early(1.0)
    # The search lost a label (at step 101): what is thresholded is a snapshot of scores still
    # shrinking, so the larger weight keeps more units (10 of 16), not fewer (5).
    assert sum(large.kept_units.values()) > sum(small.kept_units.values())
    assert len(said) == 1 and said[0].filename == __file__
    assert "l1=1 is too large" in str(said[0].message)
    assert "of 150" in str(said[0].message) and "smaller l1" in str(said[0].message)
    # A grid whose smaller weight kept the labels to the end has explored below it: no warning.
    _, none = _early((1e-3, 1.0))
    assert not none


def test_trajectory_reads_the_best_and_last_steps_that_keep_the_target():
    loss = jnp.asarray([[3.0, 2.0, 1.0, jnp.nan, jnp.nan], [3.0, 2.0, 1.5, 1.0, 0.5]])
    agree = jnp.asarray([[1.0, 1.0, 0.5, 1.0, 1.0], [1.0, 0.5, 1.0, 1.0, 1.0]])
    history = jnp.stack([loss, jnp.zeros_like(loss), agree], axis=-1)
    got = jax.device_get(_optimize.trajectory(history, 1.0))
    assert got["best"].tolist() == [1, 4] and got["last"].tolist() == [1, 4]
    assert got["nonfinite"].tolist() == [3, -1] and got["ends"].tolist() == [False, True]
    empty = jax.device_get(_optimize.trajectory(history[:, :0], 1.0))
    assert empty["best"].tolist() == [-1, -1] and empty["ends"].tolist() == [True, True]


@pytest.mark.parametrize("sparsity", [0.8])
def test_a_target_size_from_an_early_iterate_is_kept_and_warned_about(sparsity):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        large = subnet.extract(_f, X, sites="hidden", key=jax.random.key(0), l1=1.0,
                               sparsity=sparsity, steps=150, finetune_steps=30)
    said = [w for w in caught if "too large" in str(w.message)]
    assert sum(large.kept_units.values()) == _threshold.target_units(sparsity, 16)
    assert len(said) == 1
