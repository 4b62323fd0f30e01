"""What a call does besides the compiled method: no eager device work for a small `x` (the
NaN check runs in NumPy, a None or scalar baseline is broadcast inside the compiled method),
and the IG quadrature computed once per (method, steps), shared read-only."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution as A
from jaxplain.attribution import _common, _integrated, _value_checks

W = jnp.asarray(np.linspace(-1.0, 1.0, 21, dtype=np.float32).reshape(7, 3))


def f(x):
    return jnp.tanh(x @ W) * 2.0


class Compiled:
    """The names of the programs XLA compiles while active."""

    def __enter__(self):
        self.names = []
        self._listener = lambda event, *_, **kw: (
            self.names.append(kw.get("fun_name")) if "backend_compile" in event else None)
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)


@pytest.mark.parametrize("method", _integrated.METHODS)
def test_quadrature_is_computed_once_and_read_only(method):
    alphas, weights = _integrated.quadrature(method, 9)
    again = _integrated.quadrature(method, np.int64(9))
    assert again[0] is alphas and again[1] is weights
    for a in (alphas, weights):
        with pytest.raises(ValueError, match="read-only"):
            a[0] = 0.5
        with pytest.raises(ValueError, match="read-only"):
            a *= 2.0
    jp.clear_caches()  # finds the cache: the next call computes the same values anew
    fresh = _integrated.quadrature(method, 9)
    assert fresh[0] is not alphas
    np.testing.assert_array_equal(fresh[0], alphas)
    np.testing.assert_array_equal(fresh[1], weights)
    with pytest.raises(ValueError, match="steps"):
        _integrated.quadrature(method, [9])  # checked before the cache sees it


@pytest.mark.parametrize("n, method, call", [  # batch sizes no other test uses
    (53, "_gradient", lambda x, t: A.gradient(f, x, t)),
    (59, "_integrated_gradients", lambda x, t: A.integrated_gradients(f, x, t, steps=4)),
    (61, "_integrated_gradients",
     lambda x, t: A.integrated_gradients(f, x, t, steps=4, baseline=0.25)),
    (67, "_integrated_gradients",
     lambda x, t: A.integrated_gradients(f, x, t, steps=4, baseline=np.full((1, 7), 0.25))),
    (71, "_completeness_delta", lambda x, t: A.completeness_delta(f, x, t, x)),
], ids=["gradient", "ig", "ig_scalar_baseline", "ig_row_baseline", "completeness_delta"])
def test_a_call_compiles_nothing_but_the_method(n, method, call):
    """At a batch size met for the first time, every eager device operation of the call would
    compile for it: none does (the NaN check and the baseline used to)."""
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(n, 7)).astype(np.float32))
    t = jnp.asarray(np.arange(n, dtype=np.int32) % 3)
    with Compiled() as c:
        jax.block_until_ready(call(x, t))
    eager = [name for name in c.names if name != f"jit({method})"]
    assert not eager, f"eager device work in the call: {eager}"


def test_baseline_forms_agree_exactly():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 7)).astype(np.float32))
    t = jnp.array([0, 1, 2, 0])
    baselines = {"none": None, "zero": 0.0, "row": np.zeros(7, np.float32),
                 "full": jnp.zeros_like(x)}
    ig = {name: A.integrated_gradients(f, x, t, steps=6, baseline=b)
          for name, b in baselines.items()}
    for name in ("zero", "row", "full"):
        np.testing.assert_array_equal(ig[name], ig["none"])
    b = jnp.asarray(np.random.default_rng(2).normal(size=(4, 7)).astype(np.float32))
    shifted = A.integrated_gradients(f, x, t, steps=6, baseline=b)
    np.testing.assert_allclose(  # completeness: the sum is f(x)_t - f(b)_t to quadrature error
        shifted.sum(1), _common.selected(f, x, t) - _common.selected(f, b, t), atol=1e-3)
    for baseline in (None, b):
        delta = A.completeness_delta(f, x, t, ig["none"], baseline=baseline)
        want = A.completeness_delta(f, x, t, ig["none"], baseline=(
            jnp.zeros_like(x) if baseline is None else np.asarray(baseline)))
        np.testing.assert_array_equal(delta, want)


def test_nan_check_on_the_device_above_the_host_size(monkeypatch):
    """Up to :data:`_value_checks.HOST_CHECK_SIZE` elements the NaN check is a NumPy sum, above it a
    device sum: both refuse the same inputs with the same words."""
    x = np.ones((3, 7), np.float32)
    x[2, 4] = np.nan
    infinite = np.ones((3, 7), np.float32)
    infinite[0, 1], infinite[2, 4] = np.inf, -np.inf
    for size in (_value_checks.HOST_CHECK_SIZE, 0):
        monkeypatch.setattr(_value_checks, "HOST_CHECK_SIZE", size)
        with pytest.raises(ValueError, match=r"x contains NaN \(examples \[2\] of 3\)"):
            A.gradient(f, jnp.asarray(x), 0)
        with warnings.catch_warnings():  # infinities pass, and their NaN sum warns of nothing
            warnings.simplefilter("error")
            A.gradient(f, jnp.asarray(infinite), 0)
