"""On an accelerator an attribution method reads its inputs' values back at most once: the
NaN check of `x` and the range check of `target` run in one compiled call and one
``jax.device_get`` (every read makes the host wait for the device's queue). Counted on the CPU
with jaxplain's platform test made to say "accelerator" (tests/_reads.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A
from jaxplain import metrics as M
from jaxplain.lrp import EpsilonPlusFlat
from tests import _reads
from tests.attribution import twins

F = twins.mlp(twins.mlp_params(0))
X = jnp.asarray(twins.inputs(1, (6, 10), "signed"))
T = jnp.argmax(F(X), axis=-1).astype(jnp.int32)
METHODS = {
    "gradient": lambda x, t: A.gradient(F, x, t),
    "integrated_gradients": lambda x, t: A.integrated_gradients(F, x, t, steps=4),
    "lrp": lambda x, t: A.lrp(F, x, t, rules=EpsilonPlusFlat()),
    "smoothgrad": lambda x, t: A.smoothgrad(F, x, t, key=jax.random.key(0), samples=4),
}


@pytest.fixture
def accelerator(monkeypatch):
    _reads.simulate_accelerator(monkeypatch)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_read_per_call_and_none_for_inputs_checked_before(name, accelerator):
    method = METHODS[name]
    want = method(X, T)
    x, t = X + 0, T + 0  # new arrays: nothing known of them
    with _reads.counting() as reads:
        got = method(x, t)
    assert reads.waits == 1, reads
    with _reads.counting() as reads:  # the same arrays again: found fine before
        method(x, t)
    assert reads.waits == 0, reads
    np.testing.assert_array_equal(got, want)


def test_the_errors_are_the_same_on_the_accelerator_path(accelerator):
    nan = X.at[2, 3].set(jnp.nan)
    high = T.at[4].set(7)
    with pytest.raises(ValueError, match=r"x contains NaN \(examples \[2\] of 6\)"):
        A.gradient(F, nan, T)
    with pytest.raises(ValueError, match=r"target out of range: got values in \[0, 7\], "
                                         r"expected class indices in \[0, 4\]"):
        A.gradient(F, X, high)
    with pytest.raises(ValueError, match="x contains NaN"):  # x first, as check_x comes first
        A.gradient(F, nan, high)
    with pytest.raises(ValueError, match="x contains NaN"):  # a refused x is not taken as fine
        A.gradient(F, nan, T)
    with pytest.raises(ValueError, match="x contains NaN"):  # concrete inside the user's jit
        jax.jit(lambda: A.gradient(F, nan, T))()
    infinite = X.at[0, 0].set(jnp.inf).at[1, 0].set(-jnp.inf)  # the sum is NaN; no row is
    g = np.asarray(A.gradient(F, infinite, T))  # not refused: maps NaN where the target is not
    finite = np.isfinite(np.asarray(F(infinite))[np.arange(len(T)), np.asarray(T)])
    assert np.isnan(g[~finite]).all() and np.isfinite(g[finite]).all() and finite[2:].all()


def test_a_target_found_in_range_for_one_model_is_checked_again_for_another():
    wide, narrow = (lambda x: x @ jnp.ones((10, 8))), (lambda x: x @ jnp.ones((10, 5)))
    t = jnp.full((6,), 7, jnp.int32)
    A.gradient(wide, X, t)  # in range of 8 outputs: remembered
    with pytest.raises(ValueError, match=r"target out of range: got values in \[7, 7\]"):
        A.gradient(narrow, X, t)
    M.deletion(wide, X, t, X)
    with pytest.raises(ValueError, match=r"target must lie in \[0, 5\)"):
        M.deletion(narrow, X, t, X)
