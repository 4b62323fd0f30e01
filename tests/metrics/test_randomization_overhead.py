"""randomization_check's cost per call: what it learns from tracing the model (it runs, its
classes, the channel axis, the layer order) is traced once per model structure and shapes, the
default target and fresh weights are compiled programs, so a warm call runs no Python of the
model; and no cache keeps a function built per call alive (``_output_shape`` holds functions
weakly, a bound method by its object)."""

from __future__ import annotations

import gc
import weakref

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution as A
from jaxplain import metrics
from jaxplain.core._adapters import _LinenFunction
from jaxplain.metrics import _rebuilt
from tests._traces import counting

X = jax.random.uniform(jax.random.key(0), (3, 6, 6, 2))


class _Runs:
    """One item per Python run of _Counted.__call__ (a trace or an eager call), reached through
    a class: a mutable global read by the model's code would leave it without a cache key."""

    items: list[int] = []


RUNS = _Runs.items


class _Counted(nn.Module):
    classes: int = 4

    @nn.compact
    def __call__(self, x):
        _Runs.items.append(1)
        x = nn.relu(nn.Conv(3, (3, 3), name="conv")(x))
        return nn.Dense(self.classes, name="head")(x.reshape(len(x), -1))


class _Unused(nn.Module):
    @nn.compact
    def __call__(self, x):
        self.param("spare", nn.initializers.zeros, (2,))  # never meets x
        return nn.Dense(3, name="head")(x.reshape(len(x), -1))


def _fields(r):
    return [np.asarray(getattr(r, k)) for k in ("spearman", "spearman_abs", "ssim")]


def _check(model, variables, x=X, **options):
    r = metrics.randomization_check(model, variables, x, A.gradient, key=jax.random.key(1),
                                    **options)
    jax.block_until_ready(r.spearman)
    return r


def test_a_warm_call_runs_no_python_of_the_model_and_gives_the_cold_result():
    model = _Counted()
    first = model.init(jax.random.key(2), X)
    _check(model, first)  # defaults: target, fresh weights and layers found by the check
    checkpoint = model.init(jax.random.key(3), X)  # new weights, same structure
    RUNS.clear()
    with counting() as counts:
        warm = _check(model, checkpoint)
    assert len(RUNS) == 0  # was 4: its trace, layer_order's, an eager f(x), an eager init
    assert counts.traces <= 3  # was 8 (14 on the digits CNN)
    jp.clear_caches()
    cold = _check(model, checkpoint)
    assert warm.states == cold.states
    for a, b in zip(_fields(warm), _fields(cold)):
        np.testing.assert_array_equal(a, b)


def test_the_defaults_equal_the_prediction_and_model_init():
    model = _Counted()
    variables = model.init(jax.random.key(2), X)
    init_key = jax.random.split(jax.random.key(1))[0]  # the check's key for model.init
    fresh = model.init(init_key, X[:1])
    compiled = _rebuilt.init(model, init_key, X[:1], {})
    for a, b in zip(jax.tree.leaves(compiled), jax.tree.leaves(fresh)):
        np.testing.assert_array_equal(a, b)  # the same draws, bit for bit
    target = jnp.argmax(model.apply(variables, X), axis=-1)
    by_default = _check(model, variables)
    given = _check(model, variables, target=target, fresh=fresh)
    for a, b in zip(_fields(by_default), _fields(given)):
        np.testing.assert_array_equal(a, b)


def test_the_analysis_follows_the_structure():
    """Another class count (same x), another input shape: each its own analysis."""
    four, three = _Counted(classes=4), _Counted(classes=3)
    _check(four, four.init(jax.random.key(2), X), target=3)
    with pytest.raises(ValueError, match="target"):
        _check(three, three.init(jax.random.key(2), X), target=3)
    vectors = jax.random.uniform(jax.random.key(4), (3, 5))
    dense = nn.Dense(4)
    r = _check(dense, dense.init(jax.random.key(2), vectors), x=vectors)
    assert r.ssim is None and r.spearman.shape == (2, 3)  # kernel, bias; vectors


def test_warnings_are_given_on_every_call():
    model = _Unused()
    variables = model.init(jax.random.key(2), X)
    for _ in range(2):
        with pytest.warns(UserWarning, match="never uses the weights"):
            r = _check(model, variables)
        assert r.states == ("spare", "head")  # the unused one last in order, first state


def test_randomization_check_keeps_no_model_function_alive():
    """Each cold call builds the model's function from its weights; once the call returns,
    nothing holds it (the output-shape cache held it, and its traced programs, for 512 calls)."""
    model = _Counted()
    variables = model.init(jax.random.key(2), X)
    for n in (1, 2, 3):  # three shapes: three functions built and analysed
        _check(model, variables, x=X[:n], win_size=3)
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, _LinenFunction) and o.model is model
             and not any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(o.variables))]
    assert alive == []


def test_new_functions_are_released_with_jaxs_own_caches():
    """A new function per call (an inline lambda over a checkpoint's weights): jaxplain's caches
    hold none of them; ``jax.clear_caches()`` alone releases them."""
    refs = []
    for seed in range(3):
        w = jax.random.normal(jax.random.key(seed), (4, 3))
        f = lambda x, w=w: x @ w  # noqa: E731
        A.gradient(f, X[:, 0, 0, :].repeat(2, -1), 0)
        refs.append(weakref.ref(f))
        del f
    jax.clear_caches()
    gc.collect()
    assert [r() for r in refs] == [None] * 3
