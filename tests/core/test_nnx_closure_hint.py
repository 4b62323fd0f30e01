"""A closure over a Flax NNX module that updates its state when called (training-mode BatchNorm,
a call through ``nnx.jit``) fails inside jaxplain's trace with Flax's TraceContextError; the
error says to pass ``jaxplain.as_function(model)`` instead, which then works. A statistic held
as a NumPy array fails with JAX's TracerArrayConversionError inside NNX instead: the same hint."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain as jp
from jaxplain import attribution as A

_X = jax.random.normal(jax.random.key(0), (4, 6))


class _MLP(nnx.Module):
    def __init__(self, rngs):
        self.lin1 = nnx.Linear(6, 8, rngs=rngs)
        self.lin2 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.lin2(jax.nn.relu(self.lin1(x)))


class _BNNet(nnx.Module):
    def __init__(self, rngs):
        self.lin1 = nnx.Linear(6, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.lin2 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.lin2(jax.nn.relu(self.bn(self.lin1(x))))


@nnx.jit
def _predict(model, x):
    return model(x)


def _numpy_stats():
    """A training-mode BatchNorm whose statistics are NumPy arrays (weights restored from NumPy):
    NNX's write of a traced value into them fails with JAX's TracerArrayConversionError."""
    model = _BNNet(nnx.Rngs(0))
    model.bn.mean = nnx.BatchStat(np.zeros(8, np.float32))
    model.bn.var = nnx.BatchStat(np.ones(8, np.float32))
    return model, lambda x: model(x)


_CLOSURES = {  # (the model, the closure a user writes over it)
    "nnx_jit": lambda: (m := _MLP(nnx.Rngs(0)), lambda x: _predict(m, x)),
    "train_mode_batchnorm": lambda: (m := _BNNet(nnx.Rngs(0)), lambda x: m(x)),
    "numpy_batch_stats": _numpy_stats,
}
_CALLS = {
    "gradient": lambda f: A.gradient(f, _X, 0),
    "sites": lambda f: jp.sites(f, _X),
}


@pytest.mark.parametrize("call", list(_CALLS))
@pytest.mark.parametrize("closure", list(_CLOSURES))
def test_a_closure_over_a_mutating_nnx_module_gets_the_as_function_hint(closure, call):
    model, f = _CLOSURES[closure]()
    with pytest.raises(ValueError, match="could not be evaluated") as info:
        _CALLS[call](f)
    message = str(info.value)
    assert "f = jaxplain.as_function(model)" in message
    assert "rebuild or reload" in message
    fresh = type(model)(nnx.Rngs(0))  # the fix the hint gives, on a rebuilt model
    fresh.eval()
    np.testing.assert_allclose(A.gradient(jp.as_function(fresh), _X, 0),
                               jax.grad(lambda x: fresh(x)[:, 0].sum())(_X), atol=1e-6)


def test_another_model_error_gets_no_nnx_hint():
    with pytest.raises(ValueError, match="could not be evaluated") as info:
        A.gradient(lambda x: x @ jnp.ones((5, 3)), _X, 0)
    assert "as_function" not in str(info.value)
