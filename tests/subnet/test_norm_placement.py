"""A scored site before a normaliser whose statistics span the channels (a GroupNorm, a
LayerNorm) is warned about: the norm turns its removed (zeroed) channels into -mean / std,
input-dependent, so they still reach the output. An RMSNorm or an InstanceNorm keeps them 0."""

import warnings

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import subnet
from jaxplain.subnet import _placement

NORMS = {"group": lambda: nn.GroupNorm(num_groups=2, name="norm"),
         "layer": lambda: nn.LayerNorm(name="norm"),
         "rms": lambda: nn.RMSNorm(name="norm"),
         "instance": lambda: nn.GroupNorm(num_groups=8, name="norm"),
         "none": None}


class Net(nn.Module):
    norm: str

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(8, (3, 3), name="conv1")(x)
        if NORMS[self.norm] is not None:
            h = NORMS[self.norm]()(h)
        return nn.Dense(4, name="head")(nn.relu(h).mean((1, 2)))


class EqxNet(eqx.Module):
    conv1: eqx.nn.Conv2d
    gn1: eqx.nn.GroupNorm
    head: eqx.nn.Linear

    def __init__(self, key):
        k = jax.random.split(key, 2)
        self.conv1 = eqx.nn.Conv2d(1, 8, 3, padding=1, key=k[0])
        self.gn1 = eqx.nn.GroupNorm(2, 8)
        self.head = eqx.nn.Linear(8, 4, key=k[1])

    def __call__(self, x):  # (1, 8, 8)
        return self.head(jax.nn.relu(self.gn1(self.conv1(x))).mean(axis=(1, 2)))


def _linen(norm):
    x = jax.random.normal(jax.random.key(1), (12, 8, 8, 1))
    return jp.as_function(Net(norm), Net(norm).init(jax.random.key(0), x)), x


def _equinox():
    x = jax.random.normal(jax.random.key(1), (12, 1, 8, 8))
    return jp.as_function(EqxNet(jax.random.key(0))), x


CASES = {"linen-group": (lambda: _linen("group"), "conv1", "norm"),
         "linen-layer": (lambda: _linen("layer"), "conv1", "norm"),
         "equinox-group": (_equinox, "conv1", "gn1")}


def _warnings(f, x, sites):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        subnet.extract(f, x, sites=sites, key=jax.random.key(2), steps=0, finetune_steps=0,
                       l1=1e-3, fidelity=0.0)
    return [w for w in caught if "normaliser" in str(w.message)]


@pytest.mark.parametrize("case", list(CASES))
def test_removed_channels_are_input_dependent_after_the_norm(case):
    # Why the warning: with the even units of the site at 0, the norm gives them -mean / std of
    # their group, which varies with the input and moves the logits.
    make, site, norm = CASES[case]
    f, x = make()
    keep = jnp.arange(8) % 2 == 1
    fs = jp.intervene(f, {site: lambda v: v * keep})
    removed = np.asarray(jp.capture(fs, norm)(x)[1][norm])[..., ::2]
    assert removed.std(axis=0).max() > 1e-2
    cut = jp.intervene(fs, {norm: lambda v: v * keep})
    assert float(jnp.max(jnp.abs(fs(x) - cut(x)))) > 1e-2
    [(s, t, leak)] = _placement.placement(f, x, (site,)).normalised
    # The probe reads the same change (from 0, the norm's value with the whole site at 0) on
    # its first few samples.
    assert (s, t) == (site, norm)
    assert leak == pytest.approx(np.abs(removed[:_placement._SAMPLES]).max(), rel=1e-4)


@pytest.mark.parametrize("case", list(CASES))
def test_extract_warns_about_a_site_before_the_norm(case):
    make, site, norm = CASES[case]
    f, x = make()
    [caught] = _warnings(f, x, site)
    message = str(caught.message)
    assert caught.filename == __file__
    assert f"{site!r} (normalised at {norm!r}" in message and f"(here [{norm!r}])" in message
    assert _placement.placement(f, x, (norm,)) == ([], [])  # scored after the norm


def test_scoring_the_activation_after_the_norm_or_a_plain_conv_is_not_warned_about():
    f, x = _linen("group")
    assert _warnings(f, x, "relu") == []
    g, x = _linen("none")
    assert _placement.placement(g, x, ("conv1",)) == ([], [])


@pytest.mark.parametrize("norm", ["rms", "instance"])
def test_norms_that_keep_a_zeroed_channel_at_zero_are_not_flagged(norm):
    f, x = _linen(norm)
    fs = jp.intervene(f, {"conv1": lambda v: v * (jnp.arange(8) % 2 == 1)})
    removed = np.asarray(jp.capture(fs, "norm")(x)[1]["norm"])[..., ::2]
    assert np.abs(removed).max() == 0  # no mean subtracted, or the channel's own statistics
    assert _placement.placement(f, x, ("conv1",)) == ([], [])


def test_a_saturated_activation_before_a_dense_layer_is_not_a_normaliser():
    w1 = jax.random.normal(jax.random.key(1), (4, 6))
    w2 = jax.random.normal(jax.random.key(2), (6, 6))

    def f(x):
        with jax.named_scope("hidden"):
            h = x @ w1
        return jnp.tanh(h) @ w2

    x = jax.random.normal(jax.random.key(3), (5, 4))
    assert _placement.placement(f, x, ("hidden",)).normalised == []
