"""jaxplain.clear_caches releases the functions the methods have cached, and the pattern for many
checkpoints (the parameters as an argument of one's own jit) compiles once."""

import ast
import dataclasses
import gc
import importlib
import pathlib
import weakref

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jp
from jaxplain import attribution as A

ROOT = pathlib.Path(jp.__file__).parent


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="head")(nn.relu(nn.Dense(8, name="hidden")(x)))


MODEL = MLP()
X = jax.random.normal(jax.random.key(0), (4, 5))


@dataclasses.dataclass(frozen=True)
class Guided:
    def activation(self, op, x, y, g):
        return g * (x > 0) * (g > 0)


def _explain_a_checkpoint(seed):
    """Explain one checkpoint with several methods; weak references to its function and one of
    its weight arrays."""
    variables = MODEL.init(jax.random.key(seed), X)
    f = jp.as_function(MODEL, variables)
    jp.sites(f, X)
    jp.capture(f, "relu")(X)
    jp.intervene(f, {"relu": jnp.zeros_like})(X)
    jax.grad(lambda v: jp.rewrite_backward(f, Guided())(v).sum())(X)
    A.gradient(f, X, 0)
    A.integrated_gradients(f, X, 0, steps=4)
    A.activation_x_gradient(f, X, 0, site="relu")
    return weakref.ref(f), weakref.ref(variables["params"]["hidden"]["kernel"])


def test_clear_caches_releases_the_functions_and_their_weights():
    refs = [_explain_a_checkpoint(seed) for seed in range(3)]
    jp.clear_caches()
    gc.collect()
    assert [(f(), w()) for f, w in refs] == [(None, None)] * 3


def _cached_functions():
    """``(module, qualified name)`` of every function decorated with a functools cache in the
    jaxplain sources."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for dec in node.decorator_list:
                text = ast.unparse(dec)
                if "lru_cache" in text or text in ("functools.cache", "cache"):
                    found.append((module.removesuffix(".__init__"), node.name,
                                  node in tree.body))
    return found


def test_every_functools_cache_of_the_sources_is_cleared():
    found = _cached_functions()
    assert len(found) >= 8  # the search works
    jp.sites(lambda x: jnp.tanh(x), X)  # fill some
    A.gradient(jp.as_function(MODEL, MODEL.init(jax.random.key(0), X)), X, 0)
    jp.clear_caches()
    for module, name, top_level in found:
        assert top_level, (f"{module}.{name} is cached but not at a module's top level: register "
                           "its cache with jaxplain.core._caches.register")
        fn = getattr(importlib.import_module(module), name)
        assert fn.cache_info().currsize == 0, f"{module}.{name}"


def test_new_parameters_as_an_argument_of_ones_own_jit_compile_once():
    traces = []

    @jax.jit
    def explain(params, x):
        traces.append(1)  # runs only while tracing
        return A.gradient(lambda z: MODEL.apply(params, z), x, 0)

    for seed in range(3):  # three "checkpoints"
        variables = MODEL.init(jax.random.key(seed), X)
        want = A.gradient(jp.as_function(MODEL, variables), X, 0)
        np.testing.assert_allclose(explain(variables, X), want, rtol=1e-5, atol=1e-6)
    assert len(traces) == 1
