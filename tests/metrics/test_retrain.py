"""ROAR / KAR: removal counts and a planted-pixel data set where the answer is known."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import metrics
from jaxplain.metrics._retrain import replace_top


def test_replace_top_changes_exactly_int_q_hw_pixels():
    x = jax.random.uniform(jax.random.key(0), (5, 8, 8, 1), minval=1.0, maxval=2.0)
    maps = jax.random.normal(jax.random.key(1), x.shape)
    for q in (0.0, 0.1, 0.3, 0.55, 1.0):
        count = int(q * 64)
        removed = replace_top(x, maps, jnp.zeros(1), count, keep=False)
        kept = replace_top(x, maps, jnp.zeros(1), count, keep=True)
        np.testing.assert_array_equal((removed == 0).sum((1, 2, 3)), count)
        np.testing.assert_array_equal((kept != 0).sum((1, 2, 3)), count)
        # the removed pixels are the ones with the largest |map|
        top = np.argsort(-np.abs(np.asarray(maps).reshape(5, -1)), axis=1)[:, :count]
        flat = np.asarray(removed).reshape(5, -1)
        assert np.all(np.take_along_axis(flat, top, axis=1) == 0)


class _Small(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(nn.relu(nn.Dense(32)(x.reshape(len(x), -1))))


def _planted():
    from jaxplain.data import Digits

    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 600).astype(np.int32)
    x = rng.uniform(0, 0.3, (600, 8, 8, 1)).astype(np.float32)
    x[:, :2, :5] = 0.0                                   # pixels 0..9 of the 8x8 grid:
    x[np.arange(600), y // 5, y % 5, 0] = 1.0            # the label's pixel lights up
    return Digits(*(jnp.asarray(a) for a in (x[:450], y[:450], x[450:], y[450:])))


def _oracle(f, x, t):
    informative = jnp.zeros((8, 8, 1)).at[:2, :5].set(1.0)
    return jnp.broadcast_to(informative, x.shape) + 1e-3 * x


def _random(f, x, t):
    return jax.random.uniform(jax.random.key(7), x.shape)


def test_roar_and_kar_find_the_planted_pixels():
    digits = _planted()
    f = lambda x: jnp.zeros((len(x), 10))  # noqa: E731  (the maps ignore the model)
    kw = dict(key=jax.random.key(0), f=f, digits=digits, epochs=6, model=_Small(),
              learning_rate=1e-2)
    q = (0.0, 10 / 64 + 1e-3)
    oracle = metrics.roar(_oracle, fractions=q, **kw)
    rand = metrics.roar(_random, fractions=q[1:], **kw)
    np.testing.assert_allclose(oracle.fractions, q, rtol=1e-6)
    assert float(oracle.accuracy[0]) > 0.9                # unmodified: learnable
    assert float(oracle.accuracy[1]) < 0.25               # informative pixels gone: chance
    assert float(rand.accuracy[0]) > 0.6                  # a random 10 of 64 hurts far less
    kept = metrics.kar(_oracle, fractions=(10 / 64 + 1e-3,), **kw)
    assert float(kept.accuracy[0]) > 0.9                  # the 10 kept pixels suffice


def test_an_own_f_without_digits_is_refused_up_front_naming_digits(monkeypatch):
    import jaxplain.data

    w = jnp.ones((144, 4))
    f = lambda x: x.reshape(len(x), 144) @ w           # a model of 12x12 images
    monkeypatch.setattr(jaxplain.data, "train", lambda *a, **k: pytest.fail("trained"))
    for run in (metrics.roar, metrics.kar):
        with pytest.raises(ValueError, match=r"f cannot read the images of the embedded 8x8 "
                                             r"digits \(the default of digits=\), shaped "
                                             r"\(8, 8, 1\)") as info:
            run(_oracle, key=jax.random.key(0), f=f)
        assert "digits=data.Digits(x_train=..., y_train=..., x_test=..., y_test=...)" in str(
            info.value)


def test_errors():
    with pytest.raises(ValueError, match="fractions must be"):
        metrics.roar(_oracle, key=jax.random.key(0), fractions=(-0.1,))
    with pytest.raises(TypeError, match="method must be callable"):
        metrics.kar(None, key=jax.random.key(0))
