"""A second extraction on the same model and shapes reuses every compiled stage, also with
other L1 weights (the grid is data, not a static argument)."""

import jax

from jaxplain import subnet
from jaxplain.subnet import _extract, _optimize
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
