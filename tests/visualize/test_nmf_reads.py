"""nmf checks its matrix (finite, non-negative) by reading back two scalars, not the matrix:
on an accelerator the whole activation matrix was copied to the host on every call
(tests/_reads.py counts the reads)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import visualize as vis
from tests import _reads

KEY = jax.random.key(0)
V = jax.nn.relu(jax.random.normal(jax.random.key(1), (64, 16)))


def test_the_check_reads_two_scalars_once():
    want = vis.nmf(V, 3, key=KEY, steps=20)
    with _reads.counting() as reads:
        got = vis.nmf(V + 0, 3, key=KEY, steps=20)
    assert (reads.waits, reads.elements) == (1, 2), reads
    for field in ("w", "h", "error"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))


def test_the_refusals_and_the_jitted_call_are_unchanged():
    with pytest.raises(ValueError, match="v contains NaN or infinite values"):
        vis.nmf(V.at[3, 4].set(jnp.inf), 3, key=KEY)
    with pytest.raises(ValueError, match=r"non-negative \(NMF\), its minimum is -0.5;"):
        vis.nmf(V.at[3, 4].set(-0.5), 3, key=KEY)
    with pytest.raises(ValueError, match="its minimum is -2;"):  # integer data
        vis.nmf(jnp.arange(-2, 6).reshape(2, 4), 1, key=KEY)
    nan = V.at[0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="v contains NaN"):  # concrete inside the user's jit
        jax.jit(lambda: vis.nmf(nan, 3, key=KEY))()
    jitted = jax.jit(lambda v: vis.nmf(v, 3, key=KEY, steps=20))
    np.testing.assert_allclose(jitted(V).h, vis.nmf(V, 3, key=KEY, steps=20).h, rtol=1e-5)
    assert np.isnan(jitted(V.at[0, 0].set(-1.0)).h).all()
