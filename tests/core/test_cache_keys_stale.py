"""The core caches miss when what a call computes changed: an edit's function attributes and the
fields of a frozen dataclass it reads (`function_key`), and the JAX flags (`per_function`); and
an unhashable frozen dataclass as `f` is told the fix that works."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution, pathways
from jaxplain.core._caches import function_key
from jaxplain.pathways import _checks
from jaxplain.subnet import _extract

X = jnp.array([[1.0, -2.0, 3.0]])


def _f(x):
    with jax.named_scope("hidden"):
        h = jax.nn.relu(x * 1.0)
    return h * 2.0


def _same(got, want):
    """Equal values and signs (so -0.0 is told from 0.0)."""
    return np.allclose(got, want) and np.array_equal(np.signbit(got), np.signbit(want))


def _scaled(v):
    return v * _scaled.k


def test_an_edit_reading_its_own_attribute_is_rekeyed_when_the_attribute_changes():
    def edited():  # a notebook cell re-run: the same edit, another attribute value
        return jp.intervene(_f, {"hidden": _scaled})(X)

    for k in (1.0, 5.0, 5.0):
        _scaled.k = k
        assert _same(edited(), _f(X) * k)
    _scaled.k = 5.0
    assert function_key(_scaled) == function_key(_scaled)  # unchanged: still one program
    _scaled.cache = {}  # an attribute that may change in place: no key, equal only to itself
    assert function_key(_scaled) is _scaled
    del _scaled.cache


SCALE = 1.0


def _times_scale(v):
    return v * SCALE


@dataclasses.dataclass(frozen=True)
class _Holder:
    value: object
    hidden: object = dataclasses.field(default=1.0, compare=False)


def test_a_frozen_dataclass_read_by_an_edit_is_keyed_by_its_fields():
    global SCALE
    holder = None

    def edited(use):  # one inline edit per call, reading the current `holder`
        edits = {
            "fn": lambda v: holder.value(v),
            "sign": lambda v: jnp.copysign(v, holder.value),
            "is_true": lambda v: -v if holder.value is True else v,
            "hidden": lambda v: v * holder.hidden,
        }
        return jp.intervene(_f, {"hidden": edits[use]})(X)

    cases = [  # (edit, holder, how SCALE is set, the edited site's factor)
        ("fn", _Holder(_times_scale), 1.0, 1.0),
        ("fn", _Holder(_times_scale), 5.0, 5.0),  # same dataclass, the function's global changed
        ("sign", _Holder(0.0), 1.0, 1.0),
        ("sign", _Holder(-0.0), 1.0, -1.0),  # 0.0 == -0.0
        ("is_true", _Holder(1), 1.0, 1.0),
        ("is_true", _Holder(True), 1.0, -1.0),  # 1 == True
        ("hidden", _Holder(0, hidden=1.0), 1.0, 1.0),
        ("hidden", _Holder(0, hidden=3.0), 1.0, 3.0),  # a compare=False field
    ]
    try:
        for use, holder, SCALE, factor in cases:
            assert _same(edited(use), _f(X) * factor), (use, holder, SCALE)
    finally:
        SCALE = 1.0
    holder = _Holder(_times_scale)  # equal fields: an inline edit keeps one key
    first, second = [function_key(lambda v: holder.value(v)) for _ in range(2)]
    assert first == second


def test_per_function_caches_follow_the_x64_flag():
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(4, 6)), rng.normal(size=(6, 3))  # float64 NumPy weights

    def f(x):
        return jax.nn.relu(x @ w1) @ w2

    x = jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)

    def calls():
        return (pathways.contributions(f, x, 0)["relu"], _checks.resolve(f, x, None),
                _extract._output(f, x))

    calls()  # without x64: float32 everywhere
    with jax.enable_x64(True):
        contributions, resolved, output = calls()
        jp.clear_caches()
        fresh_contributions, fresh_resolved, fresh_output = calls()
    assert contributions.dtype == fresh_contributions.dtype == np.float64
    # float32 closeness only: JAX itself keeps a NumPy constant put on the device without x64
    # (jax.jit(f) then fails under x64 with RuntimeProgramInputMismatch); not a jaxplain cache
    np.testing.assert_allclose(contributions, fresh_contributions, rtol=1e-6, atol=1e-6)
    assert resolved == fresh_resolved and resolved[0][0][2] == np.float64
    assert output == fresh_output and output[1] == np.float64


def test_an_unhashable_frozen_dataclass_as_f_is_told_to_use_eq_false():
    w = jax.random.normal(jax.random.key(0), (3, 2))

    @dataclasses.dataclass(frozen=True)
    class Linear:
        w: jax.Array

        def __call__(self, x):
            return x @ self.w

    @dataclasses.dataclass(frozen=True, eq=False)
    class LinearById:
        w: jax.Array
        __call__ = Linear.__call__

    x, target = jnp.ones((2, 3)), jnp.array([0, 1])
    with pytest.raises(TypeError, match=r"^f must be hashable .*@dataclass\(eq=False\)") as err:
        attribution.gradient(Linear(w), x, target)
    assert "frozen dataclass" not in str(err.value)  # it is one already
    got = attribution.gradient(LinearById(w), x, target)  # the fix it gives works
    np.testing.assert_allclose(got, jax.grad(lambda z: (z @ w)[jnp.arange(2), target].sum())(x),
                               rtol=1e-6)
