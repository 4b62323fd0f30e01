"""An inline edit or predicate that calls a helper reached through a module or a class (a
notebook's ``helpers.scaled``, a static or class method) is keyed with what the helper reads:
rebinding the global it reads gives a fresh program, an unchanged one reuses the compiled
program, and a helper that reads by a computed name (``getattr``) is never cached."""

import os
import types

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jp
from jaxplain.core._caches import SameFunction, function_key
from tests._traces import counting

W = jnp.array([[1.0, -1.0, 0.5], [0.5, 2.0, -1.0], [-0.5, 1.0, 1.0]])
V = jnp.array([[1.0], [2.0], [-1.0]])
X = jnp.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])


def g(x):
    return jnp.tanh(jax.nn.relu(x @ W)) @ V


def edited(scale):
    """`g` with its ReLU's output times `scale`, written out."""
    return jnp.tanh(scale * jax.nn.relu(X @ W)) @ V


def module(name: str, source: str) -> types.ModuleType:
    """A module made from `source`, as a notebook's helper module is (not installed code)."""
    space = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), vars(space))
    return space


helpers = module("helpers", """
SCALE = 1.0
WANTED = "relu"
def scaled(v):
    return v * SCALE
def pick(name):
    return name.startswith(WANTED)
def countdown(v, n):  # reads itself
    return v * SCALE if n == 0 else countdown(v, n - 1)
def even(v, n):  # reads odd, which reads even
    return v * SCALE if n == 0 else odd(v, n - 1)
def odd(v, n):
    return even(v, n - 1)
def computed(v):
    return v * getattr(me, "SC" + "ALE")
""")
helpers.me = helpers  # a module that holds itself


class Knobs:
    scale = 1.0

    @staticmethod
    def static(v):
        return v * Knobs.scale

    @classmethod
    def of_class(cls, v):
        return v * cls.scale


def test_a_module_helper_sees_its_rebound_global():
    for scale in (1.0, 0.0, 2.0, 2.0):
        helpers.SCALE = scale
        for edit in (lambda v: helpers.scaled(v), lambda v: helpers.me.me.scaled(v),
                     lambda v: helpers.countdown(v, 3), lambda v: helpers.even(v, 4)):
            y = jp.intervene(g, {"relu": edit})(X)
            np.testing.assert_allclose(y, edited(scale), rtol=1e-6)


def test_static_and_class_methods_see_the_rebound_class_attribute():
    for scale in (1.0, 0.0, 3.0):
        Knobs.scale = scale
        for edit in (lambda v: Knobs.static(v), lambda v: Knobs.of_class(v)):
            np.testing.assert_allclose(jp.intervene(g, {"relu": edit})(X), edited(scale),
                                       rtol=1e-6)


def test_a_predicate_through_a_module_picks_the_sites_it_names_now():
    for wanted in ("relu", "tanh"):
        helpers.WANTED = wanted
        _, acts = jp.capture(g, lambda n, s: helpers.pick(n))(X)
        assert sorted(acts) == [wanted]


def test_reads_by_a_computed_name_are_never_cached():
    for edit in (lambda v: v * getattr(helpers, "SCALE"), lambda v: helpers.computed(v)):
        assert not isinstance(function_key(edit), SameFunction)
        for scale in (1.0, 0.0):
            helpers.SCALE = scale
            np.testing.assert_allclose(jp.intervene(g, {"relu": edit})(X), edited(scale),
                                       rtol=1e-6)


def test_an_unchanged_inline_edit_through_a_helper_compiles_once():
    helpers.SCALE, other = 0.5, X + 1.0
    for make in (lambda: (lambda v: helpers.scaled(v)), lambda: (lambda v: Knobs.static(v)),
                 lambda: (lambda v: helpers.even(v, 2))):
        assert len({function_key(make()) for _ in range(3)}) == 1
        jax.block_until_ready(jp.intervene(g, {"relu": make()})(X))
        with counting() as counts:
            jax.block_until_ready(jp.intervene(g, {"relu": make()})(other))
        assert (counts.traces, counts.compiles) == (0, 0)


def test_a_chain_of_helpers_deeper_than_the_key_follows_is_not_cached():
    chain = module("chain", "SCALE = 2.0\ndef f0(v):\n    return v * SCALE\n" + "".join(
        f"def f{i}(v):\n    return f{i - 1}(v)\n" for i in range(1, 200)))
    edit = lambda v: chain.f199(v)  # noqa: E731
    assert not isinstance(function_key(edit), SameFunction)
    np.testing.assert_allclose(jp.intervene(g, {"relu": edit})(X), edited(2.0), rtol=1e-6)


def test_methods_that_call_each_other_are_keyed_once_each():
    n = 24  # every method calls every other: n! paths, n nodes
    space = module("mesh", "class Mesh:\n    scale = 1.0\n" + "".join(
        f"    @classmethod\n    def m{i}(cls, v, n):\n        return v * cls.scale if n == 0 "
        f"else {' + '.join(f'Mesh.m{j}(v, n - 1)' for j in range(n) if j != i)}\n"
        for i in range(n)))
    make = lambda: (lambda v: space.Mesh.m0(v, 1))  # noqa: E731
    assert function_key(make()) == function_key(make())
    before = function_key(make())
    space.Mesh.scale = 2.0
    assert function_key(make()) != before
    np.testing.assert_allclose(jp.intervene(g, {"relu": make()})(X), edited(2.0 * (n - 1)),
                               rtol=1e-5)


def test_a_closure_made_by_installed_code_is_keyed_by_what_it_closes_over():
    source = "def shifted(d):\n    return lambda v: v + d\n"  # as jaxplain's own code makes edits
    made = types.ModuleType("made")
    exec(compile(source, os.path.join(os.path.dirname(jp.__file__), "made.py"), "exec"),
         vars(made))
    assert function_key(made.shifted(1.0)) == function_key(made.shifted(1.0))
    assert function_key(made.shifted(1.0)) != function_key(made.shifted(2.0))
