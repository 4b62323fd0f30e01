"""NMF corners: the result does not depend on the scale of the data (an absolute eps in the
updates zeroed data below ~1e-9), all-zero data (a dead site) is refused rather than reported
as a perfect fit, and ``rank`` / ``groups`` / ``steps`` share one integer check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import visualize as vis

KEY = jax.random.key(0)
_RNG = np.random.default_rng(0)
V = jnp.asarray(_RNG.uniform(size=(120, 4)) @ _RNG.uniform(size=(4, 12)), jnp.float32)  # rank 4
LIVE = jnp.asarray(_RNG.uniform(size=(5, 4)), jnp.float32)  # positive x -> every unit live
X = jnp.asarray(_RNG.uniform(size=(10, 5)), jnp.float32)


def _relu_site(x, weight):
    with jax.named_scope("relu"):
        h = jax.nn.relu(x @ weight)
    return h @ jnp.ones((weight.shape[1], 2))


@pytest.mark.parametrize("scale", [1e-8, 1e-10, 1e-20, 1e8])
def test_nmf_is_scale_equivariant(scale):
    # Was: relative error 0.14 at 1e-8 and 1.0 (w @ h exactly 0) at 1e-10, 0.007 at scale 1.
    ref = vis.nmf(V, 4, key=KEY, steps=300)
    out = vis.nmf(V * scale, 4, key=KEY, steps=300)
    assert float(ref.error) < 0.02
    np.testing.assert_allclose(float(out.error), float(ref.error), rtol=1e-3)
    np.testing.assert_allclose(np.asarray(out.h), np.asarray(ref.h), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out.w, np.float64) / scale, np.asarray(ref.w),
                               rtol=1e-3, atol=1e-6)
    # The error field is the relative error of the factors returned, on the data given.
    rec = np.asarray(out.w, np.float64) @ np.asarray(out.h, np.float64)
    v = np.asarray(V, np.float64) * scale
    np.testing.assert_allclose(np.linalg.norm(v - rec) / np.linalg.norm(v), float(out.error),
                               rtol=1e-3)


def test_all_zero_data_and_a_dead_site_are_refused():
    # Was: error 0.0 and all-zero "unit-norm" directions, silently.
    with pytest.raises(ValueError, match="v is all zero"):
        vis.nmf(jnp.zeros((6, 4)), 2, key=KEY)
    dead, x = -LIVE, X
    with pytest.raises(ValueError, match=r"site 'relu' is all zero.*dead"):
        vis.neuron_groups(lambda x: _relu_site(x, dead), x, site="relu", groups=2, key=KEY)
    # Under jit the values are not known: NaN, as for negative data.
    out = jax.jit(lambda x: vis.neuron_groups(lambda x: _relu_site(x, dead), x, site="relu",
                                              groups=2, key=KEY, steps=10))(x)
    assert np.isnan(np.asarray(out.directions)).all() and np.isnan(float(out.error))
    # A live site is unaffected.
    live = vis.neuron_groups(lambda x: _relu_site(x, LIVE), x, site="relu", groups=2, key=KEY,
                             steps=50)
    np.testing.assert_allclose(np.linalg.norm(live.directions, axis=1), 1.0, rtol=1e-5)


def test_rank_groups_and_steps_share_one_integer_check():
    # Was: nmf refused np.int64(3) (which neuron_groups accepted) and accepted rank=True.
    want = vis.nmf(V, 3, key=KEY, steps=20)
    got = vis.nmf(V, np.int64(3), key=KEY, steps=np.int32(20))
    np.testing.assert_array_equal(np.asarray(got.w), np.asarray(want.w))
    x, f = X, lambda x: _relu_site(x, LIVE)
    for bad in (True, 0, 3.0, "3"):
        with pytest.raises(ValueError, match=rf"rank must be an int in \[1, 12\].*rank={bad!r}"):
            vis.nmf(V, bad, key=KEY)
        with pytest.raises(ValueError, match=rf"groups must be an int in \[1, 4\].*={bad!r}"):
            vis.neuron_groups(f, x, site="relu", groups=bad, key=KEY)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        vis.nmf(V, 2, key=KEY, steps=True)
