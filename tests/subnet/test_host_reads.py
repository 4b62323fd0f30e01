"""extract reads the device rarely (on an accelerator each read waits for it): one read per
progress update, one for the placement probes of every scored site, none of a device region
but whether it is finite."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tqdm.auto

from jaxplain import subnet
from jaxplain.subnet import _extract, _optimize, _placement, _threshold
from jaxplain.subnet._extract import _phase, _search_init
from tests._reads import counting
from tests.subnet import _nets

MODULES = (_extract, _optimize, _placement, _threshold)


class _Bar:
    """A silent stand-in for tqdm that keeps what it is shown."""

    def __init__(self, *args, **kwargs):
        self.postfixes = []

    def set_postfix_str(self, text, refresh=True):
        self.postfixes.append(text)

    def update(self, n=1):
        pass

    def close(self):
        pass


def test_a_progress_update_is_one_read_whatever_the_sites(monkeypatch):
    f, x, _ = _nets.planted(0.01)
    opts = subnet.Options(l1=(1e-3, 1e-2), steps=60)
    logp, state, masks = _search_init(x, f=f, names=_nets.SITES, units=(24, 24, 24), opts=opts)
    l1 = jnp.asarray(opts.l1, jnp.float32)
    run = lambda bar: _optimize.run(  # noqa: E731
        f, state, masks, l1, l1, 1.0, x, logp, steps=60, phase=_phase(opts, search=True),
        checkpoint_every=20, progress=bar)
    monkeypatch.setattr(tqdm.auto, "tqdm", _Bar)
    jax.block_until_ready((run(None), run("search")))
    with counting(*MODULES) as quiet:
        jax.block_until_ready(run(None))
    with counting(*MODULES) as shown:
        end = jax.block_until_ready(run("search"))
    # Three updates, each one read of the last history row and the zero counts: (L, 3) + (L,).
    assert shown.waits - quiet.waits == 3 and max(shown.sizes) <= 2 * 3 + 2
    assert np.asarray(end["step"]).tolist() == [60, 60]


def test_the_placement_probes_are_one_read():
    f, x, _ = _nets.planted(0.01)
    _placement.shifted(f, x, _nets.SITES)
    with counting(*MODULES) as reads:
        found = _placement.shifted(f, x, _nets.SITES)
    assert found == [] and reads.waits == 1


def test_an_extraction_reads_four_small_values():
    f, x, _ = _nets.planted(0.01)
    # The options of test_recompile: the suite compiles them once.
    call = lambda: subnet.extract(f, x, sites=_nets.SITES, key=jax.random.key(0),  # noqa: E731
                                  l1=(1e-3, 1e-2), steps=20, finetune_steps=10)
    jax.block_until_ready(call())
    with counting(*MODULES) as reads:
        jax.block_until_ready(call())
    # Whether the region is finite (not the region), its predicted labels, the placement
    # probes of all sites, then the chosen candidate's fidelity, size and agreement.
    assert reads.waits == 4 and reads.sizes[0] == 1, reads


def test_a_device_region_stays_on_the_device():
    _, x, _ = _nets.planted(0.01)
    with counting(*MODULES) as reads:
        checked = _extract._check_region(x)
    assert checked is x and reads.sizes == [1]  # whether it is finite, not its values
    weak = jnp.full((2, 3), 0.5)  # weakly typed: taken strongly typed, as from NumPy
    assert weak.weak_type and not _extract._check_region(weak).weak_type
    with pytest.raises(ValueError, match="NaN"):
        _extract._check_region(x.at[0, 0, 0, 0].set(jnp.inf))
    host = np.asarray(x)
    from_host = _extract._check_region(host)
    assert isinstance(from_host, jax.Array) and from_host.dtype == host.dtype
    np.testing.assert_array_equal(from_host, host)
