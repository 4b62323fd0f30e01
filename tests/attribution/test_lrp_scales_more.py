"""LRP at scales by constants that the BatchNorm tests leave out: a BatchNorm1d after a flatten
(passed by ``scales="pass"`` like the same scale in an MLP) and a negation ``-h`` of a layer's
output (folded into the layer like ``h * -1.0``). Oracle: a bias-free ReLU net in float64,
where LRP-0 equals gradient x input and sums to the logit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain.attribution import lrp
from jaxplain.lrp import Composite, Epsilon, EpsilonPlus, EpsilonPlusFlat
from tests.attribution import _zennit, twins

_R = np.random.default_rng(0)
W_CONV = _R.normal(0, 0.4, (3, 3, 3, 4))                         # HWIO
W_DENSE = _R.normal(0, 0.4, (144, 5))
SCALE = _R.uniform(0.3, 2.0, 144)                                # BatchNorm1d(144)'s scale
W1, W2 = _R.normal(0, 0.5, (8, 16)), _R.normal(0, 0.5, (32, 3))
X_IMAGE, X_VECTOR = _R.normal(0, 1, (2, 6, 6, 3)), _R.normal(0, 1, (2, 8))
LRP0 = Composite(default=Epsilon(0.0), stabilizer=0.0, scales="pass")


def _conv(x):
    return jax.lax.conv_general_dilated(x, W_CONV, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _flatten_bn1d(x):
    """conv -> ReLU -> flatten -> BatchNorm1d's scale -> dense: (n, 6, 6, 3) -> (n, 5)."""
    return (jax.nn.relu(_conv(x)).reshape(x.shape[0], -1) * SCALE) @ W_DENSE


def _crelu(negate):
    """CReLU after a dense layer, ``concat(relu(h), relu(negate(h))) @ W2``: (n, 8) -> (n, 3)."""
    return lambda x: jnp.concatenate(
        [jax.nn.relu(x @ W1), jax.nn.relu(negate(x @ W1))], -1) @ W2


def _conv_negated(x):
    """conv -> transpose to NCHW -> ``-h`` -> ReLU -> dense: the negation behind a transpose."""
    h = -jnp.transpose(_conv(x), (0, 3, 1, 2))
    return jax.nn.relu(h).reshape(x.shape[0], -1) @ W_DENSE


def _check_lrp0(f, x):
    """LRP-0 with the presets' pass on scales equals gradient x input and sums to the logit."""
    with jax.enable_x64(True):
        x = jnp.asarray(x)
        r = lrp(f, x, 0, rules=LRP0, scale_by_logit=True)
        gxi = x * jax.grad(lambda v: f(v)[:, 0].sum())(x)
        np.testing.assert_allclose(r, gxi, atol=1e-10)
        np.testing.assert_allclose(r.reshape(len(x), -1).sum(1), f(x)[:, 0], rtol=1e-10)


def test_bn1d_after_flatten_is_passed():
    _check_lrp0(_flatten_bn1d, X_IMAGE)


def test_bn1d_after_flatten_agrees_with_zennits_preset():
    """conv -> ReLU -> flatten -> BatchNorm1d -> dense in NCHW with biases and a BatchNorm
    shift, against Zennit's ``EpsilonPlus`` (Pass on the BatchNorm)."""
    zennit = _zennit.load()
    if zennit is None:
        pytest.skip("zennit is not installed")
    import torch
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlus as ZennitEpsilonPlus

    r = np.random.default_rng(1)
    w_conv, b_conv, gamma, beta, mean, var, w_dense, b_dense, x = (
        a.astype(np.float32) for a in (
            r.normal(0, 0.4, (4, 3, 3, 3)), r.normal(0, 0.1, 4),            # OIHW
            r.uniform(0.3, 2.0, 144), r.normal(0, 0.2, 144),
            r.normal(0, 0.3, 144), r.uniform(0.5, 2.0, 144),
            r.normal(0, 0.4, (5, 144)), r.normal(0, 0.1, 5), r.normal(0, 1, (2, 3, 6, 6))))
    conv, bn = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm1d(144)
    dense = torch.nn.Linear(144, 5)
    for param, value in [(conv.weight, w_conv), (conv.bias, b_conv), (bn.weight, gamma),
                         (bn.bias, beta), (bn.running_mean, mean), (bn.running_var, var),
                         (dense.weight, w_dense), (dense.bias, b_dense)]:
        param.data[:] = torch.tensor(value)
    model = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.Flatten(), bn, dense).eval()
    with Gradient(model=model, composite=ZennitEpsilonPlus()) as attributor:
        _, theirs = attributor(torch.tensor(x), torch.eye(5)[[0, 0]])

    def f(v):
        h = jax.lax.conv_general_dilated(v, w_conv, (1, 1), "SAME",
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        h = jax.nn.relu(h + b_conv[None, :, None, None]).reshape(len(v), -1)
        return ((h - mean) / np.sqrt(var + 1e-5) * gamma + beta) @ w_dense.T + b_dense

    ours = lrp(f, jnp.asarray(x), 0, rules=EpsilonPlus())
    assert twins.relative_error(ours, theirs.detach().numpy()) < 1e-4


@pytest.mark.parametrize("negate", [jnp.negative, lambda h: -(h + 0.0) * 1.0],
                         ids=["neg", "neg_then_scales"])
def test_negated_layer_output_conserves(negate):
    _check_lrp0(_crelu(negate), X_VECTOR)


def test_negation_behind_a_transpose_conserves():
    _check_lrp0(_conv_negated, X_IMAGE)


def test_negation_agrees_with_scale_by_minus_one():
    """``-h`` and ``h * -1.0`` are one function: a non-conservative preset gives both the same
    relevance."""
    with jax.enable_x64(True):
        x = jnp.asarray(X_VECTOR)
        negated, scaled = (lrp(_crelu(n), x, 0, rules=EpsilonPlusFlat())
                           for n in (jnp.negative, lambda h: h * -1.0))
        np.testing.assert_allclose(negated, scaled, atol=1e-12)
