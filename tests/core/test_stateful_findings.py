"""Findings of a trial with stateful models: an edit keeps the layout the kernel reads (Equinox
NCHW sites after ``intervene(f, {"conv": jnp.zeros_like})``), and a model that mixes the batch
(train-mode BatchNorm) gets its BatchMixingWarning from every method, once, whoever asked first."""

import warnings

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution as A

_K = jax.random.split(jax.random.key(0), 4)


class _Net(eqx.Module):
    conv: eqx.nn.Conv2d
    offset: jax.Array
    lin: eqx.nn.Linear

    def __call__(self, x):  # one (1, 8, 8) image
        h = jax.nn.relu(self.conv(x) + self.offset[:, None, None])  # a per-channel offset after the site
        return self.lin(h.mean(axis=(1, 2)))


def _eqx(channels: int):
    offset = jnp.linspace(-1.0, 1.0, channels)
    net = _Net(eqx.nn.Conv2d(1, channels, 3, key=_K[0]), offset, eqx.nn.Linear(channels, 3, key=_K[1]))
    return jp.as_function(net), offset


_X = jax.random.normal(_K[2], (5, 1, 8, 8))
_EDITS = {
    "zeros_like": lambda f: jp.intervene(f, {"conv": jnp.zeros_like}),
    "constant": lambda f: jp.intervene(f, {"conv": lambda v: jnp.full_like(v, 0.5)}),
    "mask": lambda f: jp.intervene(f, {"conv": lambda v: v.at[..., 0].set(0.0)}),
    "chain": lambda f: jp.intervene(jp.intervene(f, {"conv": jnp.zeros_like}),
                                    {"conv": lambda v: v + 0.5}),
}


def _layout(f, x):
    return [(s.name, s.shape, s.channel_axis) for s in jp.sites(f, x)]


@pytest.mark.parametrize("channels", [6, 4])  # 6: H == W == C, where a wrong layout fits too
@pytest.mark.parametrize("edit", list(_EDITS))
def test_an_edit_keeps_the_layout_of_an_equinox_models_sites(channels, edit):
    f, offset = _eqx(channels)
    h = _EDITS[edit](f)
    assert _layout(h, _X) == _layout(f, _X)
    assert [s for s in _layout(h, _X) if s[0] == "relu"] == [("relu", (5, 6, 6, channels), 1)]
    conv = jp.capture(f, "conv")(_X)[1]["conv"]
    new = {"zeros_like": jnp.zeros_like(conv), "constant": jnp.full_like(conv, 0.5),
           "mask": conv.at[..., 0].set(0.0), "chain": jnp.full_like(conv, 0.5)}[edit]
    _, acts = jp.capture(h, ["conv", "relu"])(_X)
    np.testing.assert_allclose(acts["conv"], new, atol=1e-6)
    np.testing.assert_allclose(acts["relu"], jax.nn.relu(new + offset), atol=1e-6)


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
        return nn.Dense(3, name="head")(h.mean(axis=(1, 2)))


def test_an_edit_to_a_constant_keeps_a_linen_models_sites():
    x = jax.random.normal(_K[3], (5, 8, 8, 1))
    model = LinenCNN()
    f = jp.as_function(model, model.init(_K[0], x))
    h = jp.intervene(f, {"conv": jnp.zeros_like})
    assert _layout(h, x) == _layout(f, x)
    assert dict((n, a) for n, _, a in _layout(h, x))["relu"] == -1
    np.testing.assert_array_equal(jp.capture(h, "relu")(x)[1]["relu"], np.zeros((5, 8, 8, 4)))


class BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        h = nn.BatchNorm(use_running_average=not train)(nn.Dense(16)(x))
        return nn.Dense(3)(nn.relu(h))


_XB = jax.random.normal(_K[2], (8, 5))
_BN_VARS = BNNet().init(_K[1], _XB)


def _model(train: bool, traces: list):
    def f(z):
        traces.append(1)  # once per trace of f
        if train:
            return BNNet().apply(_BN_VARS, z, train=True, mutable=["batch_stats"])[0]
        return BNNet().apply(_BN_VARS, z)
    return f


_METHODS = {
    "gradient": lambda f: A.gradient(f, _XB, 0),
    "gradient_x_input": lambda f: A.gradient_x_input(f, _XB, 0),
    "integrated_gradients": lambda f: A.integrated_gradients(f, _XB, 0, steps=4),
    "smoothgrad": lambda f: A.smoothgrad(f, _XB, 0, key=_K[0], samples=2),
    "occlusion": lambda f: A.occlusion(f, _XB, 0, window=(1,)),
    "feature_ablation": lambda f: A.feature_ablation(f, _XB, 0),
    "kernel_shap": lambda f: A.kernel_shap(f, _XB, 0, key=_K[0], samples=8),
}


def _mixing_warnings(record) -> list:
    return [w for w in record if issubclass(w.category, jp.core.BatchMixingWarning)]


@pytest.mark.parametrize("method", list(_METHODS))
def test_every_method_warns_once_on_a_model_that_mixes_the_batch(method):
    for train in (True, False):
        traces: list = []
        f = _model(train, traces)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            _METHODS[method](f)
            first = len(traces)
            _METHODS[method](f)
        assert len(traces) == first  # the check is cached: no trace on the second call
        warned = _mixing_warnings(record)
        assert len(warned) == (1 if train else 0)
        assert all(w.filename == __file__ for w in warned)  # it points at the caller's line


def test_asking_mixes_batch_first_leaves_the_warning_to_the_verbs_and_methods():
    for first_use in (lambda f: jp.sites(f, _XB), lambda f: A.gradient(f, _XB, 0)):
        f = _model(True, [])
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            assert jp.core.mixes_batch(f, _XB)
            asked = len(_mixing_warnings(record))
            first_use(f)
            jp.capture(f, "relu")(_XB)
        assert asked == 0
        warned = _mixing_warnings(record)
        assert len(warned) == 1 and warned[0].filename == __file__
