"""A (P)ReLU written ``jnp.where(z >= 0, z, a * z)`` with a slope `a` that is a constant array
(Equinox's ``PReLU``, one slope per unit) is a ``leaky_relu`` activation, as
``jax.nn.leaky_relu(z, a)`` is: DeepLIFT's attributions sum to ``f(x) - f(b)`` and it is a site.
A slope computed from the input (a gate) is no activation. Before: DeepLIFT warned and missed
the sum (by 0.064 on an Equinox MLP in float64), and the PReLU was no site."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jp
from jaxplain.attribution import deeplift

_RNG = np.random.default_rng(0)
_W1, _W2 = _RNG.normal(size=(5, 8)), _RNG.normal(size=(8, 3))
_SLOPE = np.linspace(0.05, 0.4, 8)
_X, _B = _RNG.normal(size=(4, 5)), 0.5 * _RNG.normal(size=(4, 5))


class _Net(eqx.Module):
    l1: eqx.nn.Linear
    act: eqx.nn.PReLU
    l2: eqx.nn.Linear

    def __call__(self, x):
        return self.l2(self.act(self.l1(x)))


_PRELUS = {
    "where, array slope": lambda x: (lambda h: jnp.where(h >= 0, h, _SLOPE * h))(x @ _W1) @ _W2,
    "eqx.nn.PReLU(array)": lambda x: jax.vmap(eqx.nn.PReLU(_SLOPE))(x @ _W1) @ _W2,
}


def test_a_prelu_with_an_array_slope_is_a_leaky_relu():
    with jax.enable_x64(True):
        k = jax.random.split(jax.random.key(0), 2)
        net = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a)
                                     else a, _Net(eqx.nn.Linear(5, 8, key=k[0]), eqx.nn.PReLU(),
                                                  eqx.nn.Linear(8, 3, key=k[1])))
        models = dict(_PRELUS, **{"eqx module": jp.as_function(net)})
        x, b = jnp.asarray(_X), jnp.asarray(_B)
        for name, f in models.items():
            assert "leaky_relu" in [s.op for s in jp.sites(f, x)], name
            a = deeplift(f, x, 0, baseline=b)
            np.testing.assert_allclose(np.asarray(a.sum(1)), np.asarray(f(x)[:, 0] - f(b)[:, 0]),
                                       rtol=1e-9, atol=1e-12, err_msg=name)


def test_a_slope_computed_from_the_input_is_no_activation():
    def gated(x):
        h = x @ _W1
        return jnp.where(h >= 0, h, jnp.tanh(x @ _W1[:, ::-1]) * h) @ _W2

    assert "leaky_relu" not in [s.op for s in jp.sites(gated, jnp.asarray(_X, jnp.float32))]
