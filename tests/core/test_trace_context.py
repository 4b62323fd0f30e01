"""The traced-program cache is keyed, as `jax.jit`'s is, by the `jax.config` flags that change a
trace: a function traced with x64 off, or under the default matmul precision, is traced again
when the flag changes, so the verbs compute what `jax.jit(f)` computes under the flags in force."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution
from jaxplain.core import _program

# `_wide` asks for float64 with x64 off, where JAX warns that it computes in float32
pytestmark = pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64")


def _wide(x):  # computes in float64 whenever x64 is on
    return jnp.tanh(x.astype(jnp.float64) * 3.0) * 1e4


X = jnp.asarray(np.random.RandomState(1).rand(3, 6), jnp.float32)


def test_x64_turned_on_after_a_trace_computes_as_jit_does():
    f = lambda x: _wide(x)  # noqa: E731 - a function of this test's own
    assert jp.capture(f, "tanh")(X)[0].dtype == jax.jit(f)(X).dtype  # traced with x64 off
    with jax.enable_x64(True):
        y, cap = jp.capture(f, "tanh")(X)
        want = jax.jit(f)(X)
        assert y.dtype == cap["tanh"].dtype == want.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(y), np.asarray(f(X)), rtol=1e-12)


def test_x64_turned_off_after_a_trace_computes_as_jit_does():
    f = lambda x: _wide(x)  # noqa: E731
    with jax.enable_x64(True):
        assert jp.capture(f, "tanh")(X)[0].dtype == jnp.float64
    y, _ = jp.capture(f, "tanh")(X)
    assert y.dtype == jax.jit(f)(X).dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), np.asarray(f(X)), rtol=1e-6)


def _precisions(fn, x):
    return sorted(set(re.findall(r"precision=([^\n]*)", str(jax.make_jaxpr(fn)(x)))))


def test_matmul_precision_set_after_a_trace_reaches_the_program():
    rs = np.random.RandomState(0)
    w1, w2 = jnp.asarray(rs.randn(6, 8), jnp.float32), jnp.asarray(rs.randn(8, 3), jnp.float32)
    f = lambda x: jax.nn.relu(x @ w1) @ w2  # noqa: E731
    t = jnp.arange(3)
    default = _precisions(jp.capture(f, "relu"), X)
    gradient_default = _precisions(lambda x: attribution.gradient(f, x, t), X)
    with jax.default_matmul_precision("highest"):
        highest = _precisions(jax.jit(f), X)
        assert highest and highest != default
        assert _precisions(jp.capture(f, "relu"), X) == highest
        assert _precisions(lambda x: attribution.gradient(f, x, t), X) != gradient_default
    assert _precisions(jp.capture(f, "relu"), X) == default == _precisions(jax.jit(f), X)


def test_the_same_flags_reuse_the_trace():
    f = lambda x: _wide(x)  # noqa: E731
    spec = jax.ShapeDtypeStruct(X.shape, X.dtype)
    off = _program.trace(f, spec)
    assert _program.trace(f, spec) is off
    with jax.enable_x64(True):
        on = _program.trace(f, spec)
        assert on is not off and _program.trace(f, spec) is on
    assert _program.trace(f, spec) is off


def test_the_flags_are_jax_config_flags():
    # a later JAX that drops one of them: the key no longer sees it (review the list)
    for name in _program._STRICT_FLAGS + _program._OTHER_FLAGS:
        assert hasattr(jax.config, name), name
    with jax.enable_x64(True), jax.default_matmul_precision("highest"):
        assert _program.trace_context()[:2] == (True, "highest")
