"""TCAV checks its inputs as the attribution methods do: a Flax module given as `f` is refused
with the way to wrap it, a NaN in a concrete input set is refused naming the set and the
examples, and one example without its batch axis is reported as such (pass x[None])."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jaxplain import concepts

D = 6


def model(x):
    with jax.named_scope("hidden"):
        h = jnp.tanh(x)
    return jnp.stack([h[:, 0] + h[:, 1], h[:, 2]], axis=1)


class Linen(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.relu(nn.Dense(4, name="hidden")(x)))


class Nnx(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(D, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.head = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.bn(self.hidden(x))))


def _set(seed, n=6):
    return jax.random.normal(jax.random.key(seed), (n, D))


X, CONCEPT, RANDOMS = _set(0), _set(1) + 2.0, [_set(2), _set(3), _set(4)]
CALLS = {
    "tcav": lambda f, x=X, concept=CONCEPT, randoms=RANDOMS: concepts.tcav(
        f, x, 0, site="hidden", concept=concept, randoms=randoms, steps=5),
    "cav": lambda f, x=X, concept=CONCEPT, randoms=RANDOMS: concepts.cav(
        f, concept, randoms[0], site="hidden", steps=5),
    "directional_derivatives": lambda f, x=X, **_: concepts.directional_derivatives(
        f, x, 0, cav=concepts.CAV("hidden", jnp.ones(D) / D ** 0.5, jnp.array(1.0))),
}


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("module, message", [
    (Linen(), r"f is a Flax Linen module \(Linen\).*as_function\(model, variables\)"),
    (Nnx(nnx.Rngs(0)), r"f is a Flax NNX module \(Nnx\): pass jaxplain\.as_function"),
], ids=["linen", "nnx"])
def test_module_as_f_is_refused_with_the_way_to_wrap_it(name, module, message):
    with pytest.raises(TypeError, match=message):
        CALLS[name](module)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("where, args", [
    ("x", {"x": X.at[3, 1].set(jnp.nan)}),
    ("concept", {"concept": CONCEPT.at[0, 0].set(jnp.nan)}),
    ("randoms[1]", {"randoms": [RANDOMS[0], RANDOMS[1].at[5, 2].set(jnp.nan), RANDOMS[2]]}),
])
def test_nan_in_an_input_set_is_refused_naming_it(where, args):
    example = {"x": 3, "concept": 0, "randoms[1]": 5}[where]
    with pytest.raises(ValueError, match=rf"{where.replace('[', '.').replace(']', '.')} contains "
                                         rf"NaN \(examples \[{example}\] of 6\)"):
        CALLS["tcav"](model, **args)


def test_nan_in_x_is_refused_by_directional_derivatives():
    with pytest.raises(ValueError, match=r"x contains NaN \(examples \[2\] of 6\)"):
        CALLS["directional_derivatives"](model, X.at[2, 0].set(jnp.nan))


@pytest.mark.parametrize("name", ["tcav", "directional_derivatives"])
def test_one_example_without_batch_axis_says_x_none(name):
    """A dense model runs on one example of (6,) features, but gives no batch of logits."""
    f = jax.tree_util.Partial(Linen().apply, Linen().init(jax.random.key(5), X))
    with pytest.raises(ValueError, match=r"f must map x of shape \(6,\) to logits \(batch, "
                                         r"classes\); got an output of shape \(2,\).*pass "
                                         r"x\[None\]"):
        CALLS[name](f, x=X[0])
