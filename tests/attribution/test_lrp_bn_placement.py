"""LRP at BatchNorms in every placement: folded into the layer before it (also behind a
transpose or reshape), passed by the presets where no layer folds it (as Zennit's presets), a
layer whose output is read twice, and the checks around them (ZBox bounds, names, warnings)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain.attribution import lrp
from jaxplain.lrp import (Composite, Epsilon, EpsilonGammaBox, EpsilonPlus, EpsilonPlusFlat, ZBox,
                          ZPlus)
from tests.attribution import _zennit, twins

_R = np.random.default_rng(0)
W1 = _R.normal(0, 0.4, (3, 3, 3, 4)).astype(np.float32)        # HWIO
B1 = _R.normal(0, 0.1, 4).astype(np.float32)
W2 = _R.normal(0, 0.4, (4, 5)).astype(np.float32)
GAMMA, BETA = _R.uniform(-1.5, 1.5, 4).astype(np.float32), _R.normal(0, 0.2, 4).astype(np.float32)
MEAN, VAR = _R.normal(0, 0.3, 4).astype(np.float32), _R.uniform(0.5, 2.0, 4).astype(np.float32)
SCALE = GAMMA / np.sqrt(VAR + 1e-5)
X = _R.normal(0, 1, (2, 6, 6, 3)).astype(np.float32)
LRP0 = {"default": Epsilon(0.0), "stabilizer": 0.0}             # conservative at every op


def _conv(x):
    return jax.lax.conv_general_dilated(x, W1.astype(x.dtype), (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _bn(h, axis=-1, shift=True):
    """Inference BatchNorm over `axis`; without `shift` its scale alone (mean 0, beta 0)."""
    shape = [1] * h.ndim
    shape[axis] = -1
    scale = SCALE[:h.shape[axis]].reshape(shape)
    if not shift:
        return h * scale
    return (h - MEAN[:h.shape[axis]].reshape(shape)) * scale + BETA[:h.shape[axis]].reshape(shape)


def net(placement: str, *, bias=True, shift=True):
    """conv -> ReLU -> global mean -> dense, with a BatchNorm that no layer folds."""
    b = B1 if bias else 0.0

    def f(x):
        if placement == "input":
            x = _bn(x, shift=shift)
        h = jax.nn.relu(_conv(x) + b)
        if placement == "after_relu":
            h = _bn(h, shift=shift)
        if placement == "after_sum":
            h = _bn(h + jax.nn.relu(_conv(x)), shift=shift)
        h = h.mean((1, 2))
        if placement == "after_gap":
            h = _bn(h, shift=shift)
        return h @ W2
    return f


PLACEMENTS = ("input", "after_relu", "after_sum", "after_gap")


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_passing_an_unfolded_batchnorm_conserves_relevance(placement):
    # bias-free, float64, LRP-0: with the Pass rule at the scale the input relevance sums to
    # the logit; its gradient multiplies the relevance by the scale instead
    f = net(placement, bias=False, shift=False)
    with jax.enable_x64():
        x = jnp.asarray(X, jnp.float64)
        logit = f(x)[:, 0]
        passed = lrp(f, x, 0, rules=Composite(**LRP0, scales="pass"), scale_by_logit=True)
        np.testing.assert_allclose(passed.reshape(2, -1).sum(1), logit, rtol=1e-9)
        plain = lrp(f, x, 0, rules=Composite(**LRP0), scale_by_logit=True)
        assert not np.allclose(plain.reshape(2, -1).sum(1), logit, rtol=1e-3)


def test_presets_pass_single_rules_keep_the_gradient():
    f = net("after_relu")
    passing = Composite(conv=ZPlus(), dense=Epsilon(), scales="pass")
    np.testing.assert_array_equal(lrp(f, X, 1, rules=EpsilonPlus()), lrp(f, X, 1, rules=passing))
    assert EpsilonPlusFlat().scales == EpsilonGammaBox().scales == "pass"
    assert Composite(default=ZPlus()).scales == "gradient"


PRESETS = {"EpsilonPlusFlat": EpsilonPlusFlat, "EpsilonPlus": EpsilonPlus}


def _torch_twin(placement):
    torch = pytest.importorskip("torch")

    def bn(c):
        m = torch.nn.BatchNorm2d(c) if placement != "after_gap" else torch.nn.BatchNorm1d(c)
        m.weight.data, m.bias.data = (torch.tensor(a[:c]) for a in (GAMMA, BETA))
        m.running_mean.data, m.running_var.data = (torch.tensor(a[:c]) for a in (MEAN, VAR))
        return m

    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    conv.weight.data = torch.tensor(W1.transpose(3, 2, 0, 1).copy())
    conv.bias.data = torch.tensor(B1)
    dense = torch.nn.Linear(4, 5, bias=False)
    dense.weight.data = torch.tensor(W2.T.copy())
    layers = {"input": [bn(3), conv, torch.nn.ReLU()], "after_relu": [conv, torch.nn.ReLU(), bn(4)],
              "after_gap": [conv, torch.nn.ReLU()]}[placement]
    tail = [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()]
    tail += [bn(4)] if placement == "after_gap" else []
    return torch.nn.Sequential(*layers, *tail, dense).eval()


@pytest.mark.parametrize("placement", ["input", "after_relu", "after_gap"])
@pytest.mark.parametrize("preset", ["EpsilonPlusFlat", "EpsilonPlus"])
def test_presets_agree_with_zennits_presets_at_an_unfolded_batchnorm(placement, preset):
    zennit = _zennit.load()
    if zennit is None:
        pytest.skip("zennit is not installed")
    from zennit import composites as zc
    from zennit.canonizers import SequentialMergeBatchNorm

    model = _torch_twin(placement)
    import torch

    with torch.no_grad():
        np.testing.assert_allclose(model(twins.to_torch(X)).numpy(), net(placement)(X), atol=1e-5)
    ours = lrp(net(placement), X, np.array([0, 3]), rules=PRESETS[preset]())
    theirs = _zennit.relevance(model, X, np.array([0, 3]),
                               getattr(zc, preset)(canonizers=[SequentialMergeBatchNorm()]))
    assert twins.relative_error(ours, theirs) < 1e-4


# -- 2. a BatchNorm behind a layout op still folds into its convolution --------------------------

def nhwc(x):
    return jax.nn.relu(_bn(_conv(x) + B1)).mean((1, 2)) @ W2


def nchw_port(x):        # a PyTorch port: NHWC conv, back to NCHW, BatchNorm(axis=1)
    h = _bn((_conv(x) + B1).transpose(0, 3, 1, 2), axis=1)
    return jax.nn.relu(h).mean((2, 3)) @ W2


def tokens(x):           # (n, h * w, c), then a BatchNorm over the channels
    h = _bn((_conv(x) + B1).reshape(len(x), -1, 4))
    return jax.nn.relu(h).mean(1) @ W2


@pytest.mark.parametrize("spelling", [nchw_port, tokens])
@pytest.mark.parametrize("rules", [ZPlus(), EpsilonPlusFlat(), Epsilon()])
def test_a_batchnorm_behind_a_transpose_or_reshape_folds_as_in_nhwc(spelling, rules):
    np.testing.assert_allclose(spelling(X), nhwc(X), atol=1e-5)
    np.testing.assert_allclose(lrp(spelling, X, 2, rules=rules), lrp(nhwc, X, 2, rules=rules),
                               rtol=1e-4, atol=1e-6)


def test_zplus_through_a_folded_transposed_batchnorm_is_nonnegative():
    assert (np.asarray(lrp(nchw_port, X, 2, rules=ZPlus())) >= -1e-7).all()


# -- 3. a layer whose output is read twice ------------------------------------------------------

def shared(x):           # z feeds a per-channel scale (a BatchNorm) and a raw skip
    z = _conv(x)
    return (jax.nn.relu(z * SCALE) + jax.nn.relu(z)).mean((1, 2)) @ W2


def test_a_scaled_shared_layer_output_warns_and_passing_conserves():
    with pytest.warns(UserWarning, match="not folded into that layer"):
        lrp(shared, X, 0, rules=Composite(**LRP0))
    with jax.enable_x64():
        x = jnp.asarray(X, jnp.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            r = lrp(shared, x, 0, rules=Composite(**LRP0, scales="pass"), scale_by_logit=True)
        np.testing.assert_allclose(r.reshape(2, -1).sum(1), shared(x)[:, 0], rtol=1e-9)


# -- 4. ZBox bounds as lists ---------------------------------------------------------------------

def test_zbox_list_bounds_are_tuples_and_mismatched_ones_a_clear_error():
    assert ZBox([0.0, 0, 0], [1.0, 1, 1]) == ZBox((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    f = net("after_relu")
    np.testing.assert_array_equal(lrp(f, X, 0, rules=EpsilonGammaBox([-3.0, -3, -3], [3, 3, 3])),
                                  lrp(f, X, 0, rules=EpsilonGammaBox((-3.0,) * 3, (3.0,) * 3)))
    with pytest.raises(ValueError, match=r"low=\(0.0, 0.0\) and high=\(1.0, 1.0, 1.0\)"):
        ZBox((0, 0), (1, 1, 1))


# -- 5. naming a folded BatchNorm ----------------------------------------------------------------

def test_naming_a_folded_batchnorm_names_its_layer():
    def named(x):
        with jax.named_scope("conv"):
            z = _conv(x) + B1
        with jax.named_scope("bn"):
            h = _bn(z)
        return jax.nn.relu(h).mean((1, 2)) @ W2

    with pytest.raises(ValueError, match="'bn' in rules is folded into the linear layer 'conv'"):
        lrp(named, X, 0, rules=Composite(default=Epsilon(), layers=(("bn", ZPlus()),)))


# -- 6. elementwise nonlinearities without a rule -----------------------------------------------

@pytest.mark.parametrize("op", [jnp.abs, jnp.square, lambda h: jnp.clip(h, -1, 1)])
def test_lrp_warns_about_a_nonlinearity_it_has_no_rule_for(op):
    def f(x):
        return op(_conv(x)).mean((1, 2)) @ W2

    with pytest.warns(UserWarning, match="lrp: the model applies elementwise nonlinearities"):
        lrp(f, X, 0, rules=Epsilon())


def test_a_relu_net_with_batchnorms_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for placement in PLACEMENTS:
            lrp(net(placement), X, 0, rules=EpsilonPlusFlat())
        lrp(nhwc, X, 0, rules=Epsilon())
