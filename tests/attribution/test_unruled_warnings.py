"""Which nonlinearities lrp and deeplift warn about: a square root of an elementwise value is one
(``sqrt(relu(h) + 1)`` broke LRP-0's sum silently; only the root of a statistic, a LayerNorm's
or a norm's, is a normaliser), and so is anything before it; a padding mask made from x by a
comparison is none (no gradient passes a comparison, and lrp routes relevance whole through
``jnp.where``); LayerNorm spellings (Flax, Equinox, ``jnp.var``/``std``, a norm) stay silent."""

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain.attribution import _model_checks

_RNG = np.random.default_rng(0)
_W1, _W2 = _RNG.normal(0, 0.5, (8, 16)), _RNG.normal(0, 0.5, (16, 3))
_X = jnp.asarray(_RNG.normal(0, 1, (2, 8)), jnp.float32)
_T = jnp.asarray(_RNG.normal(0, 1, (2, 5, 8)), jnp.float32).at[:, 3:].set(0.0)


@pytest.mark.parametrize("act, names", [
    (lambda h: jnp.sqrt(jax.nn.relu(h) + 1.0), ("sqrt",)),
    (lambda h: jnp.sqrt(jnp.abs(h)), ("abs", "sqrt")),
    (lambda h: jax.lax.rsqrt(jnp.exp(h) + 1.0), ("exp", "rsqrt")),
])
def test_a_root_of_an_elementwise_value_is_a_nonlinearity(act, names):
    f = lambda x: act(x @ _W1) @ _W2  # noqa: E731
    assert set(_model_checks.unruled_nonlinear(f, _X)) >= set(names)


@pytest.mark.parametrize("valid", [
    lambda x: jnp.abs(x).sum(-1) > 0,
    lambda x: jnp.any(x != 0, -1),
    lambda x: jnp.max(jnp.abs(x), -1) > 0,
])
def test_a_padding_mask_from_x_is_no_nonlinearity_for_lrp(valid):
    w = jnp.asarray(_RNG.normal(0, 0.4, (8, 8)), jnp.float32)

    def f(x):
        h = jnp.where(valid(x)[..., None], jax.nn.relu(x @ w), 0.0)
        return h.sum(1) @ _W2[:8]

    assert _model_checks.unruled_nonlinear(f, _T, routes=False) == ()
    assert _model_checks.unruled_nonlinear(f, _T) == ("select_n",)  # DeepLIFT: a switch


class _Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.gelu(nn.Dense(8)(nn.LayerNorm()(x)))
        return nn.Dense(3)(nn.RMSNorm()(h).mean(1))


def _flax():
    m = _Block()
    p = m.init(jax.random.key(1), _T)
    return lambda z: m.apply(p, z)


def _equinox():
    ln, lin = eqx.nn.LayerNorm(8), eqx.nn.Linear(8, 3, key=jax.random.key(2))
    return lambda z: jax.vmap(lambda v: lin(ln(v)))(z.mean(1))


def _centered(z):
    return (z - z.mean(-1, keepdims=True)) / jnp.sqrt(z.var(-1, keepdims=True) + 1e-5)


@pytest.mark.parametrize("make", [
    _flax, _equinox,
    lambda: lambda z: _centered(z).sum(1) @ _W2[:8],
    lambda: lambda z: (z / z.std(-1, keepdims=True)).sum(1) @ _W2[:8],
    lambda: lambda z: (z / jnp.linalg.norm(z, axis=-1, keepdims=True)).sum(1) @ _W2[:8],
])
def test_layernorm_spellings_are_normalisers(make):
    assert _model_checks.unruled_nonlinear(make(), _T + 0.5) == ()
