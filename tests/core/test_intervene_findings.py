"""A trial user's findings on intervene: the names of one value all see its edit, inline edit
functions reuse the compiled program without going stale, an array edit patches the site, and
an Unknown-site error on a rewrite_backward function says where the sites went."""

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp

W = jnp.array([[1.0, -1.0, 0.5], [0.5, 2.0, -1.0], [-0.5, 1.0, 1.0]])
V = jnp.array([[1.0], [2.0], [-1.0]])
X = jnp.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
SCALE = 2.0  # read as a global by an edit below
GATE = None  # likewise


def g(x):
    """`blk` and `blk/relu` are one value: the scope ends with its ReLU."""
    with jax.named_scope("blk"):
        h = jax.nn.relu(x @ W)
    return jnp.tanh(h @ V)


def relu(x):
    return jax.nn.relu(x @ W)


@pytest.mark.parametrize("edited", ["blk", "blk/relu"])
def test_every_name_of_an_edited_value_sees_the_edit(edited):
    h = jp.intervene(g, {edited: lambda v: 2 * v})
    y, acts = jp.capture(h, ["blk", "blk/relu"])(X)
    np.testing.assert_allclose(acts["blk"], 2 * relu(X))
    np.testing.assert_allclose(acts["blk/relu"], 2 * relu(X))
    np.testing.assert_allclose(y, jnp.tanh(2 * relu(X) @ V), rtol=1e-6)


def test_entries_on_one_value_apply_in_order_and_a_glob_edits_it_once():
    _, acts = jp.capture(jp.intervene(g, {"blk/relu": lambda v: 2 * v, "blk": lambda v: v + 1}),
                         ["blk", "blk/relu"])(X)
    np.testing.assert_allclose(acts["blk"], 2 * relu(X) + 1)
    _, acts = jp.capture(jp.intervene(g, {"blk": lambda v: v + 1, "blk/relu": lambda v: 2 * v}),
                         ["blk", "blk/relu"])(X)
    np.testing.assert_allclose(acts["blk/relu"], 2 * (relu(X) + 1))
    y = jp.intervene(g, {"blk*": lambda v: 2 * v})(X)  # picks both names: doubled once
    np.testing.assert_allclose(y, jnp.tanh(2 * relu(X) @ V), rtol=1e-6)


def test_nested_interventions_on_two_names_of_one_value_compose():
    h = jp.intervene(jp.intervene(g, {"blk/relu": lambda v: 2 * v}), {"blk": lambda v: 3 * v})
    y, acts = jp.capture(h, ["blk", "blk/relu"])(X)
    np.testing.assert_allclose(acts["blk/relu"], 6 * relu(X))
    np.testing.assert_allclose(acts["blk"], 6 * relu(X))
    np.testing.assert_allclose(y, jnp.tanh(6 * relu(X) @ V), rtol=1e-6)


def test_a_constant_edit_keeps_the_later_sites_and_its_value():
    c = jnp.full((2, 3), 5.0)
    h = jp.intervene(g, {"blk/relu": lambda v: c})
    assert [s.name for s in jp.sites(h, X)] == [s.name for s in jp.sites(g, X)]
    _, acts = jp.capture(h, ["blk", "tanh"])(X)
    np.testing.assert_allclose(acts["blk"], c)
    np.testing.assert_allclose(acts["tanh"], jnp.tanh(c @ V), rtol=1e-6)


def test_an_inline_edit_reuses_the_compiled_program():
    made = {jp.intervene(g, {"blk/relu": lambda v: v * 0.5}) for _ in range(3)}
    assert len(made) == 1
    y = made.pop()(X)
    np.testing.assert_allclose(y, jnp.tanh(0.5 * relu(X) @ V), rtol=1e-6)


def test_an_edit_with_other_values_never_reuses_a_stale_program():
    global SCALE
    for scale in (0.5, 3.0, 3):  # a closed-over number: 3 and 3.0 are keyed apart
        y = jp.intervene(g, {"blk": lambda v: v * scale})(X)
        np.testing.assert_allclose(y, jnp.tanh(scale * relu(X) @ V), rtol=1e-6)
    for gate in (jnp.ones(3), jnp.array([1.0, 0.0, 1.0])):  # a closed-over array
        y = jp.intervene(g, {"blk": lambda v: v * gate})(X)
        np.testing.assert_allclose(y, jnp.tanh((gate * relu(X)) @ V), rtol=1e-6)
    for SCALE in (2.0, 4.0):  # a global the edit reads
        y = jp.intervene(g, {"blk": lambda v: v * SCALE})(X)
        np.testing.assert_allclose(y, jnp.tanh(SCALE * relu(X) @ V), rtol=1e-6)
    for shift in (1.0, 2.0):  # a default
        y = jp.intervene(g, {"blk": lambda v, s=shift: v + s})(X)
        np.testing.assert_allclose(y, jnp.tanh((relu(X) + shift) @ V), rtol=1e-6)


def test_a_reused_edit_reading_a_rebound_global_array_sees_the_new_array():
    global GATE
    for make in (jnp.asarray, np.asarray):  # a JAX array (keyed by identity), a NumPy one
        edit = lambda v: v * GATE  # noqa: E731  one function object, reused
        for GATE in (make([1.0, 1.0, 1.0]), make([0.0, 2.0, 1.0])):
            y = jp.intervene(g, {"blk": edit})(X)
            np.testing.assert_allclose(y, jnp.tanh((GATE * relu(X)) @ V), rtol=1e-6)
    GATE = jnp.ones(3)  # fresh edits reading one JAX array: one key, one program
    assert len({jp.intervene(g, {"blk": lambda v: v * GATE}) for _ in range(3)}) == 1


class Settings:
    scale = 1.0


def test_an_edit_reading_a_rebound_module_or_class_attribute_sees_the_new_value():
    settings = types.ModuleType("settings")
    for space in (settings, Settings):
        for scale in (1.0, 5.0, 5.0):
            space.scale = scale
            y = jp.intervene(g, {"blk": lambda v: v * space.scale})(X)
            np.testing.assert_allclose(y, jnp.tanh(scale * relu(X) @ V), rtol=1e-6)
    for gate in (jnp.ones(3), jnp.array([1.0, 0.0, 2.0])):  # an array attribute, by identity
        Settings.gate = gate
        y = jp.intervene(g, {"blk": lambda v: v * Settings.gate})(X)
        np.testing.assert_allclose(y, jnp.tanh((gate * relu(X)) @ V), rtol=1e-6)
    same = {jp.intervene(g, {"blk": lambda v: jnp.maximum(v, 0.0) * jax.nn.sigmoid(v)})
            for _ in range(2)}  # functions of jnp and jax.nn, by identity: one key
    assert len(same) == 1


def test_an_array_edit_patches_the_site_and_varies_without_recompiling():
    clean = jp.capture(g, "blk")(X[::-1])[1]["blk"]
    h = jp.intervene(g, {"blk": clean})
    np.testing.assert_allclose(h(X), g(X[::-1]), rtol=1e-6)
    np.testing.assert_allclose(jp.capture(h, "blk/relu")(X)[1]["blk/relu"], clean)
    gate = jnp.array([1.0, 0.0, 2.0])  # broadcasts to (batch, 3)
    np.testing.assert_allclose(jp.intervene(g, {"blk": gate})(X), jnp.tanh(
        jnp.broadcast_to(gate, (2, 3)) @ V), rtol=1e-6)
    compiled = h.func._cache_size()
    np.testing.assert_allclose(jp.intervene(g, {"blk": clean + 1.0})(X),
                               jnp.tanh((clean + 1.0) @ V), rtol=1e-6)
    assert h.func._cache_size() == compiled  # a patch of the same shape: no new program


def test_a_bad_array_edit_says_what_fits():
    with pytest.raises(ValueError, match=r"shape \(4, 3\) does not broadcast to it"):
        jp.intervene(g, {"blk": jnp.ones((4, 3))})(X)
    with pytest.raises(TypeError, match="lambda v: v \\* 3.0 to scale"):
        jp.intervene(g, {"blk": 3.0})


def test_an_unknown_site_of_a_rewritten_function_points_to_the_working_order():
    @dataclasses.dataclass(frozen=True)
    class Guided:
        def activation(self, op, x, y, g):
            return g * (x > 0) * (g > 0)

    with pytest.raises(ValueError, match=r"rewrite_backward\(intervene\(f, edits\), rules\)"):
        jp.capture(jp.rewrite_backward(g, Guided()), "blk/relu")(X)
