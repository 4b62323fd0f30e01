"""Spearman / SSIM against references, and the parameter / label randomization checks."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxplain import metrics
from tests.metrics._reference import np_ssim


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.int32, (2, 2, 9), elements=st.integers(-3, 3)))
def test_spearman_matches_scipy_with_ties(v):
    a, b = v[0].astype(np.float32), v[1].astype(np.float32)
    got = np.asarray(metrics.spearman(jnp.asarray(a), jnp.asarray(b)))
    for i in range(2):
        if np.ptp(a[i]) == 0 or np.ptp(b[i]) == 0:
            assert got[i] == 0.0                       # scipy: NaN; ours: 0, never NaN
        else:
            assert got[i] == pytest.approx(scipy.stats.spearmanr(a[i], b[i])[0], abs=1e-5)


def test_ssim_matches_the_scikit_image_convention():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (3, 8, 8)).astype(np.float32)
    b = (a + rng.normal(0, 0.3, a.shape)).astype(np.float32)
    for win in (3, 5, 7):
        got = np.asarray(metrics.ssim(jnp.asarray(a), jnp.asarray(b), win_size=win))
        np.testing.assert_allclose(got, [np_ssim(a[i], b[i], win, 2.0) for i in range(3)],
                                   rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(metrics.ssim(jnp.asarray(a), jnp.asarray(a)), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="win_size must be odd"):
        metrics.ssim(jnp.asarray(a), jnp.asarray(b), win_size=4)


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
        x = nn.relu(nn.Conv(8, (3, 3), name="conv2")(x))
        x = x.reshape(len(x), -1)
        x = nn.relu(nn.Dense(16, name="fc")(x))
        return nn.Dense(4, name="head")(x)


def _grad(f, x, t):
    return jax.grad(lambda x: f(x)[jnp.arange(len(x)), t].sum())(x)


def _edges(f, x, t):
    """An input-only 'explanation': horizontal + vertical differences; ignores the model."""
    return jnp.abs(x - jnp.roll(x, 1, axis=1)) + jnp.abs(x - jnp.roll(x, 1, axis=2))


@pytest.fixture(scope="module")
def net():
    x = jax.random.uniform(jax.random.key(0), (6, 8, 8, 1))
    return _Net(), _Net().init(jax.random.key(1), x), x


def test_full_randomization_destroys_gradient_but_not_an_edge_detector(net):
    model, variables, x = net
    key = jax.random.key(2)
    grad = metrics.randomization_check(model, variables, x, _grad, key=key)
    edges = metrics.randomization_check(model, variables, x, _edges, key=key)
    assert grad.states == ("head", "fc", "conv2", "conv1")
    assert grad.spearman.shape == (4, 6)
    np.testing.assert_allclose(edges.spearman, 1.0, atol=1e-6)
    np.testing.assert_allclose(edges.ssim, 1.0, atol=1e-6)
    assert float(jnp.abs(grad.spearman[-1]).mean()) < 0.4
    assert float(grad.ssim[-1].mean()) < 0.5
    assert float(grad.spearman_abs[-1].mean()) < float(edges.spearman_abs[-1].mean()) - 0.4


def test_independent_state_of_the_top_layer_equals_the_first_cascading_state(net):
    model, variables, x = net
    key = jax.random.key(3)
    cas = metrics.randomization_check(model, variables, x, _grad, key=key)
    ind = metrics.randomization_check(model, variables, x, _grad, key=key, mode="independent")
    np.testing.assert_allclose(ind.spearman[0], cas.spearman[0], rtol=1e-6)
    # A layer re-drawn alone changes the explanation, but less than all layers at once.
    assert float(ind.spearman[-1].mean()) > float(cas.spearman[-1].mean())
    # a restored checkpoint may list the params in another order: the call order still wins
    shuffled = {"params": dict(reversed(list(variables["params"].items())))}
    again = metrics.randomization_check(model, shuffled, x, _grad, key=key)
    assert again.states == cas.states == ("head", "fc", "conv2", "conv1")
    gauss = metrics.randomization_check(model, variables, x, _grad, key=key, stdev=0.1,
                                        layers=("conv1", "head"))
    assert gauss.states == ("head", "conv1") and bool(jnp.isfinite(gauss.ssim).all())


def test_errors(net):
    model, variables, x = net
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="layers must be names from"):
        metrics.randomization_check(model, variables, x, _grad, key=key, layers=("conv9",))
    with pytest.raises(ValueError, match="mode must be one of"):
        metrics.randomization_check(model, variables, x, _grad, key=key, mode="all")
    with pytest.raises(ValueError, match="x must be NHWC images"):
        metrics.randomization_check(model, variables, x.reshape(6, -1), _grad, key=key)
    with pytest.raises(ValueError, match="'params' collection"):
        metrics.randomization_check(model, {"state": {}}, x, _grad, key=key)


class _Small(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(nn.relu(nn.Dense(32)(x.reshape(len(x), -1))))


def test_label_randomization_changes_gradients_not_edges():
    from jaxplain.data import Digits, train

    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 400).astype(np.int32)
    xs = rng.uniform(0, 0.3, (400, 8, 8, 1)).astype(np.float32)
    xs[np.arange(400), y // 8, y % 8, 0] = 1.0          # a planted, learnable label pixel
    digits = Digits(*(jnp.asarray(a) for a in (xs[:300], y[:300], xs[300:], y[300:])))
    model = _Small()
    variables, _ = train(jax.random.key(0), digits, model, epochs=8, progress=False)
    x = digits.x_test[:8]
    kw = dict(key=jax.random.key(1), digits=digits, epochs=8)
    grad = metrics.data_randomization_check(model, variables, x, _grad, **kw)
    edges = metrics.data_randomization_check(model, variables, x, _edges, **kw)
    assert grad.states == ("shuffled labels",)
    np.testing.assert_allclose(edges.spearman, 1.0, atol=1e-6)
    assert float(grad.spearman_abs.mean()) < 0.6
