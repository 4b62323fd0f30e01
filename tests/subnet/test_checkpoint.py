"""Long optimisations checkpoint with orbax and resume where they stopped."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import subnet
from jaxplain.subnet import _optimize
from jaxplain.subnet._extract import _phase, _search_init
from tests.subnet import _nets


def _setup(steps):
    f, x, _ = _nets.planted(0.01)
    opts = subnet.Options(l1=1e-3, steps=steps)
    logp, state, masks = _search_init(x, f=f, names=_nets.SITES, units=(24, 24, 24), opts=opts)
    l1 = jnp.asarray([1e-3], jnp.float32)
    return (f, state, masks, l1, l1, 1.0, x, logp), _phase(opts, search=True)


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    args, phase = _setup(40)
    common = dict(steps=40, phase=phase, checkpoint_every=10)
    straight = _optimize.run(*args, **common, checkpoint_dir=str(tmp_path / "a"))
    # An interrupted run: only the first 20 steps are done (and checkpointed) ...
    _optimize.run(*args, **dict(common, steps=20), checkpoint_dir=str(tmp_path / "b"))
    # ... then the full call restores step 20 and runs the remaining 20.
    resumed = _optimize.run(*args, **common, checkpoint_dir=str(tmp_path / "b"))
    assert int(resumed["step"][0]) == 40
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                         rtol=1e-6, atol=1e-7),
                 straight, resumed)
    plain = _optimize.run(*args, steps=40, phase=phase)
    np.testing.assert_allclose(np.asarray(plain["history"]), np.asarray(straight["history"]),
                               rtol=1e-6, atol=1e-7)


def test_extract_with_checkpoints_matches_and_reruns_from_them(tmp_path):
    f, x, _ = _nets.planted(0.01)
    kw = dict(sites=_nets.SITES, key=jax.random.key(0), l1=1e-3, **_nets.FAST)
    first = subnet.extract(f, x, **kw, checkpoint_dir=str(tmp_path), checkpoint_every=250)
    again = subnet.extract(f, x, **kw, checkpoint_dir=str(tmp_path), checkpoint_every=250)
    plain = subnet.extract(f, x, **kw)
    for sub in (again, plain):
        assert sub.kept_units == first.kept_units
        np.testing.assert_allclose(float(sub.region_kl), float(first.region_kl), rtol=1e-4,
                                   atol=1e-7)
