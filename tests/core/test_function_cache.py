"""The per-function caches (``jaxplain.core._function_cache.per_function``) keep no function
alive: a model function built per call (a lambda over new weights) goes once the call returns and
JAX's own caches are cleared, while a bound method (a new object per access), an equal view built
anew (``site_output(f, ...)``, ``ChannelsLast(f, axis)``) and an equal function still hit."""

from __future__ import annotations

import ast
import dataclasses
import gc
import importlib
import pathlib
import warnings
import weakref

import jax
import jax.numpy as jnp
import pytest

import jaxplain as jp
from jaxplain import attribution as A
from jaxplain import metrics, pathways, subnet, visualize
from jaxplain.attribution import _common
from jaxplain.core import _capture
from jaxplain.core._channels import ChannelsLast
from jaxplain.core._function_cache import PerFunction, per_function
from tests._traces import counting

ROOT = pathlib.Path(jp.__file__).parent
X = jax.random.normal(jax.random.key(0), (2, 6, 6, 2))


def _cnn(seed: int):
    """A small conv net ``(n, 6, 6, 2) -> (n, 3)`` closing over new weights."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    w = jax.random.normal(k1, (3, 3, 2, 4)) * 0.3
    v = jax.random.normal(k2, (6 * 6 * 4, 3)) * 0.1

    def f(x):
        h = jax.nn.relu(jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
        return h.reshape(len(x), -1) @ v
    return f


# the public call that reaches each per-function cache (named)
CALLS = {
    "attribution._output_shape": lambda f: A.gradient(f, X, 0),
    "attribution._site_value": lambda f: A.grad_cam(f, X, 0, site="relu"),
    "pathways._resolve": lambda f: pathways.select(f, X, 0, keep=0.5),
    "subnet._output_cached": lambda f: subnet.extract(f, X, sites="relu", key=jax.random.key(0),
                                                      steps=1, finetune_steps=1),
    "visualize._output_shape": lambda f: visualize.render(
        f, visualize.class_logit(0), key=jax.random.key(0), shape=(1, 6, 6, 2), steps=1),
    "visualize._site_shapes": lambda f: visualize.render(
        f, visualize.channel("relu", 0), key=jax.random.key(0), shape=(1, 6, 6, 2), steps=1),
    "core._last_axis_cached": lambda f: metrics.deletion(f, X, 0, jnp.ones_like(X), steps=2),
}


@pytest.mark.parametrize("cache", CALLS)
def test_a_function_built_per_call_is_released(cache):
    refs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(2):
            f = _cnn(seed)
            CALLS[cache](f)
            refs.append(weakref.ref(f))
            del f
    _release()
    assert [r() for r in refs] == [None, None]


def _release():
    """Clear JAX's caches and capture's compiled functions, which hold their f (the one strong
    cache left, at most 64 entries: see ``_capture._compiled``); collect."""
    jax.clear_caches()
    _capture._compiled.cache_clear()
    gc.collect()


class _Model:
    def __init__(self, w):
        self.w = w

    def logits(self, x):
        return x @ self.w


class _Slotted:
    __slots__ = ("w",)  # no weak reference to it

    def __init__(self, w):
        self.w = w

    def logits(self, x):
        return x @ self.w


def _warm(f, x) -> int:
    """The traces of a second ``output_shape(f, x)`` (0: a cache hit)."""
    with counting() as counts:
        _common.output_shape(f, x)
    return counts.traces


def test_a_bound_method_hits_and_goes_with_its_object():
    x = jnp.ones((2, 4))
    obj = _Model(jnp.ones((4, 3)))
    assert _common.output_shape(obj.logits, x) == (2, 3)
    assert _warm(obj.logits, x) == 0  # a new method object, the same entry
    ref = weakref.ref(obj)
    del obj
    gc.collect()
    assert ref() is None
    slotted = _Slotted(jnp.ones((4, 5)))  # held strongly by the fallback LRU cache
    assert _common.output_shape(slotted.logits, x) == (2, 5)
    assert _warm(slotted.logits, x) == 0


def _reading_nchw(f):
    """`f`, a model of NHWC images, as one of NCHW images."""
    return lambda z: f(z.transpose(0, 2, 3, 1))


def test_an_equal_view_built_anew_hits_and_goes_with_its_function():
    f = _cnn(0)
    g = _reading_nchw(f)
    views = ((A.site_output, (f, "relu")), (ChannelsLast, (g, 1)))
    for make, args in views:
        assert _common.output_shape(make(*args), X) == _common.output_shape(make(*args), X)
        assert _warm(make(*args), X) == 0  # an equal object built anew, as each call builds it
    refs = weakref.ref(f), weakref.ref(g)
    del f, g, views, args
    _release()
    assert [r() for r in refs] == [None, None]


@dataclasses.dataclass(frozen=True)
class _Scale:
    """A callable compared by value, with no callable field: equal ones share an entry."""

    c: float

    def __call__(self, x):
        return x * self.c


def test_equal_functions_share_an_entry_and_errors_are_not_cached():
    seen = []

    @per_function(maxsize_fallback=4)
    def calls(f, n):
        seen.append(n)
        if n < 0:
            raise ValueError(n)
        return n

    a, b = _Scale(2.0), _Scale(2.0)
    assert calls(a, 1) == calls(b, 1) == 1 and seen == [1]  # b equals a: a hit
    assert calls(_Scale(3.0), 1) == 1 and seen == [1, 1]
    for _ in range(2):
        with pytest.raises(ValueError):
            calls(a, -1)
    assert seen == [1, 1, -1, -1]  # an error is computed again, as lru_cache does
    with pytest.raises(TypeError):  # unhashable, as lru_cache says
        calls(a, [1])
    assert calls.cache_info().hits == 1


def _per_function_caches():
    """``(module, name)`` of every function decorated with ``per_function`` in the sources."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and any(
                    "per_function" in ast.unparse(d) for d in node.decorator_list):
                found.append((module, node.name))
    return found


def test_clear_caches_empties_every_per_function_cache():
    found = _per_function_caches()
    assert len(found) >= 7  # the search works
    f = _cnn(0)
    A.gradient(f, X, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pathways.select(f, X, 0, keep=0.5)
    caches = [getattr(importlib.import_module(m), name) for m, name in found]
    assert all(isinstance(c, PerFunction) for c in caches)
    assert sum(c.cache_info().currsize for c in caches) >= 2
    jp.clear_caches()
    assert [c.cache_info().currsize for c in caches] == [0] * len(caches)
