"""The functions as_function returns format short: jax.eval_shape, jit and error messages call
str(f), and the Linen adapter's dataclass repr printed every weight array (92,000 characters
and about 100 ms for a 3M-parameter MLP, paid on every eval_shape)."""

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

import jaxplain as jp

WIDTH, DEPTH = 512, 8  # 2.1M parameters


class _Deep(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        for _ in range(DEPTH):
            x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Dense(WIDTH)(x)))
        return nn.Dense(10)(x)


def test_linen_repr_summarises_the_variables_not_their_values():
    model = _Deep()
    variables = model.init(jax.random.key(0), jnp.ones((2, WIDTH)), train=False)
    f = jp.as_function(model, variables, train=False)
    text = repr(f)
    assert len(text) < 200, text
    params = jax.tree.leaves(variables["params"])
    assert "_Deep" in text and "train=False" in text
    assert f"params: {len(params)} arrays, {sum(a.size for a in params):,} values" in text
    assert str(f) == text
    assert jax.eval_shape(f, jax.ShapeDtypeStruct((3, WIDTH), jnp.float32)).shape == (3, 10)


class _NNX(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(WIDTH, WIDTH, rngs=rngs)
        self.head = nnx.Linear(WIDTH, 10, rngs=rngs)

    def __call__(self, x):
        return self.head(jax.nn.relu(self.hidden(x)))


def test_nnx_and_equinox_functions_format_short():
    mlp = eqx.nn.MLP(WIDTH, 10, WIDTH, 4, key=jax.random.key(0))
    for f in (jp.as_function(_NNX(nnx.Rngs(0))), jp.as_function(mlp)):
        assert len(repr(f)) < 200, repr(f)
