"""One check of PRNG key arguments (jaxplain.core._keys.check_key), with one wording, in every
function that draws random numbers: an int seed or None is refused naming the argument, never
as a JAX internal error; typed and legacy raw keys pass as jax.random takes them."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution as A
from jaxplain import metrics as M
from jaxplain import pathways as P
from jaxplain import subnet as S
from jaxplain.core._keys import check_key


class Mlp(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="head")(nn.relu(nn.Dense(8, name="hidden")(x)))


X = jax.random.normal(jax.random.key(0), (4, 5))
MODEL = Mlp()
VARIABLES = MODEL.init(jax.random.key(1), X)
F = jp.as_function(MODEL, VARIABLES)
T = jnp.array([0, 1, 2, 0])

CALLS = {
    "attribution.smoothgrad": lambda k: A.smoothgrad(F, X, T, key=k, samples=2),
    "metrics.randomization_check": lambda k: M.randomization_check(
        MODEL, VARIABLES, X, A.gradient, key=k, target=T),
    "metrics.random_attribution": lambda k: M.random_attribution(k),
    "metrics.compare": lambda k: M.compare(F, X, T, {"gradient": A.gradient}, ("sparseness",),
                                           key=k),
    "pathways.random_masks": lambda k: P.random_masks(k, F, X, keep=0.5),
    "pathways.learned_gates": lambda k: P.learned_gates(F, X, init="uniform", key=k, steps=1),
    "subnet.extract": lambda k: S.extract(F, X, sites="hidden", key=k, steps=2,
                                          finetune_steps=1),
}


def test_keys_pass_as_given():
    for key in (jax.random.key(0), jax.random.PRNGKey(0), np.array([0, 1], np.uint32)):
        assert check_key(key) is key
    draw = lambda k: jax.random.normal(check_key(k), (2,))  # noqa: E731
    np.testing.assert_array_equal(jax.jit(draw)(jax.random.key(3)), draw(jax.random.key(3)))
    keys = jax.random.split(jax.random.key(3), 2)
    np.testing.assert_array_equal(jax.vmap(draw)(keys), np.stack([draw(k) for k in keys]))


def test_missing_key_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match=r"seed is required.*seed=jax.random.key\(0\)"):
        check_key(None, "seed")


@pytest.mark.parametrize("bad, why", [
    (0, r"got int 0 \(a seed: pass key=jax.random.key\(seed\)\)"),
    (jnp.array(7), r"got an array of dtype int32 and shape \(\) \(a seed"),
    (1.5, "got float 1.5"),
    (jnp.zeros(2), r"got an array of dtype float32 and shape \(2,\) \(a raw key is uint32 of "
                   r"shape \(2,\)"),
    (jax.random.split(jax.random.PRNGKey(0)), r"got an array of dtype uint32 and shape \(2, 2\)"),
], ids=["int", "int array", "float", "float pair", "raw pair of keys"])
def test_other_values_are_type_errors_saying_how_to_make_a_key(bad, why):
    with pytest.raises(TypeError, match=r"key must be a PRNG key, e\.g\. jax\.random\.key\(0\); "
                                        + why):
        check_key(bad)


def test_several_typed_keys_are_refused():
    with pytest.raises(TypeError, match=r"key must be one PRNG key; got an array of keys of "
                                        r"shape \(3,\)"):
        check_key(jax.random.split(jax.random.key(0), 3))


@pytest.mark.parametrize("name", sorted(CALLS))
def test_int_seed_is_refused_with_the_shared_wording(name):
    with pytest.raises(TypeError, match=r"key must be a PRNG key, e\.g\. jax\.random\.key\(0\); "
                                        r"got int 0 \(a seed"):
        CALLS[name](0)


@pytest.mark.parametrize("name", sorted(set(CALLS) - {"pathways.learned_gates"}))
def test_missing_key_is_refused_with_the_shared_wording(name):
    with pytest.raises(ValueError, match=r"key is required .*key=jax\.random\.key\(0\)"):
        CALLS[name](None)


def test_raw_and_typed_keys_of_the_same_data_draw_the_same():
    raw = jax.random.PRNGKey(4)
    typed = jax.random.wrap_key_data(raw)
    masks = P.random_masks(raw, F, X, keep=0.5)
    for name, mask in P.random_masks(typed, F, X, keep=0.5).items():
        np.testing.assert_array_equal(mask, masks[name])
    np.testing.assert_array_equal(M.random_attribution(raw)(F, X, T),
                                  M.random_attribution(typed)(F, X, T))
