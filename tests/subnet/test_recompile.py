"""A second extraction on the same model and shapes reuses every compiled stage, also with
other L1 weights (the grid is data, not a static argument)."""

import jax
import numpy as np

from jaxplain import subnet
from jaxplain.subnet import _extract, _optimize
from tests._traces import counting
from tests.subnet import _nets

STAGES = (_extract._search_init, _extract._candidates, _extract._choose, _optimize._run_chunk)


def test_second_call_does_not_recompile():
    f, x, _ = _nets.planted(0.01)
    kw = dict(sites=_nets.SITES, steps=20, finetune_steps=10)
    subnet.extract(f, x, key=jax.random.key(0), l1=(1e-3, 1e-2), **kw)
    sizes = [stage._cache_size() for stage in STAGES]
    subnet.extract(f, x, key=jax.random.key(1), l1=(3e-3, 3e-2), **kw)
    assert [stage._cache_size() for stage in STAGES] == sizes
    subnet.extract(f, x, key=jax.random.key(1), l1=(3e-3, 3e-2), **dict(kw, steps=30))
    assert _optimize._run_chunk._cache_size() > sizes[-1]  # the counter does see a new shape


def test_second_call_traces_nothing():
    """Each call traced again, with 0 compilations: run() traced a vmapped value-and-grad
    step for the carry's dtypes per phase (eagerly, uncached), _check_outputs traced f for its
    output shape and _warn_if_one_class ran f op by op (13 traces, about 250 of 700 ms of a
    repeated extraction on the digits CNN)."""
    f, x, _ = _nets.planted(0.01)
    call = lambda: subnet.extract(f, x, sites=_nets.SITES, key=jax.random.key(0),  # noqa: E731
                                  l1=(1e-3, 1e-2), steps=20, finetune_steps=10)
    first = call()
    with counting() as n:
        again = jax.block_until_ready(call())
    assert (n.traces, n.compiles) == (0, 0)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
        np.testing.assert_array_equal(a, b)
