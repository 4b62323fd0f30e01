"""Spellings of the same linear map give the same LRP relevance on a bias-free net.

An average written as a sum times one number (``h.sum((1, 2)) * (1 / 36)``, a sum pool ``* 0.25``)
is an average, as ``h.mean((1, 2))`` and ``h.sum((1, 2)) / 36`` are: the Norm rule covers the
scale (before: the relevance summed to 1/36 and 0.25 of the logit). A weighting by several
constants after the sum keeps its gradient (it multiplies the relevance, as documented). A
residual sum written ``jnp.stack(branches, 0).sum(0)`` is a sum of terms, as ``a + b + c`` is
(before: each branch got the whole relevance, 3x).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A
from jaxplain import lrp as L

_RNG = np.random.default_rng(0)  # NumPy weights: float64 under jax.enable_x64
_KERNEL = _RNG.normal(size=(3, 3, 2, 4))
_W = _RNG.normal(size=(4, 3))
_X = _RNG.uniform(size=(2, 6, 6, 2))
_LRP0 = L.Composite(default=L.Epsilon(0.0), stabilizer=0.0)


def _conv(x):
    return jax.nn.relu(jax.lax.conv_general_dilated(x, _KERNEL, (1, 1), "SAME",
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC")))


def _sum_pool(h):
    return jax.lax.reduce_window(h, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


_MEANS = {
    "mean": lambda x: _conv(x).mean((1, 2)) @ _W,
    "sum / 36": lambda x: (_conv(x).sum((1, 2)) / 36.0) @ _W,
    "sum * (1/36)": lambda x: (_conv(x).sum((1, 2)) * (1 / 36.0)) @ _W,
    "(1/36) * sum": lambda x: ((1 / 36.0) * _conv(x).sum((1, 2))) @ _W,
    "sum * array(1/36)": lambda x: (_conv(x).sum((1, 2)) * jnp.full((1, 1), 1 / 36.0)) @ _W,
}
_POOLS = {
    "sum_pool / 4, mean": lambda x: (_sum_pool(_conv(x)) / 4.0).mean((1, 2)) @ _W,
    "sum_pool * 0.25, mean": lambda x: (_sum_pool(_conv(x)) * 0.25).mean((1, 2)) @ _W,
    "0.25 * sum_pool, mean": lambda x: (0.25 * _sum_pool(_conv(x))).mean((1, 2)) @ _W,
}


def _lrp0(f, x, target):
    """LRP-0 relevance of `f` at `x` in float64 (scaled by the logit), and the logits."""
    with jax.enable_x64(True):
        x = jnp.asarray(x, jnp.float64)
        r = A.lrp(f, x, target, rules=_LRP0, scale_by_logit=True)
        return np.asarray(r), np.asarray(f(x))


def _conserves_and_agrees(spellings, x, target):
    """Each spelling's relevance sums to the logit and equals the first spelling's."""
    first = None
    for name, f in spellings.items():
        r, y = _lrp0(f, x, target)
        total = r.reshape(len(x), -1).sum(1)
        np.testing.assert_allclose(total / y[np.arange(len(x)), target], 1.0, rtol=1e-9,
                                   err_msg=name)
        first = r if first is None else first
        np.testing.assert_allclose(r, first, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("spellings", [_MEANS, _POOLS], ids=["global mean", "average pool"])
def test_an_average_spelled_as_a_product_by_one_number_conserves(spellings):
    _conserves_and_agrees(spellings, _X, np.array([0, 1]))


def test_a_weighting_by_several_constants_keeps_its_gradient():
    w = np.array([0.5, 2.0, 1.0, 3.0])  # one weight per channel: no average

    def f(x):
        return (_conv(x).sum((1, 2)) * w) @ _W

    r, y = _lrp0(f, _X, np.array([0, 0]))
    with jax.enable_x64(True):
        a = np.asarray(_conv(jnp.asarray(_X)).sum((1, 2))) * w
    # LRP-0 at the last layer gives R_a = a * W_t; the product's gradient multiplies it by w
    expected = (w * a * _W[:, 0]).sum(1)
    np.testing.assert_allclose(r.reshape(2, -1).sum(1), expected, rtol=1e-9)
    assert np.all(np.abs(expected / y[:, 0] - 1.0) > 0.05)  # so it is no average's Norm rule


_V = [_RNG.normal(size=(6, 6)) for _ in range(4)]
_XV = _RNG.normal(size=(2, 6))


def _branches(x):
    return tuple(jax.nn.relu(x @ v) for v in _V[:3])


_BRANCH_SUMS = {
    "a + b + c": lambda x: sum(_branches(x)) @ _V[3],
    "stack(-1).sum(-1)": lambda x: jnp.stack(_branches(x), -1).sum(-1) @ _V[3],
    "stack(0).sum(0)": lambda x: jnp.stack(_branches(x), 0).sum(0) @ _V[3],
    "stack(1).sum(1)": lambda x: jnp.stack(_branches(x), 1).sum(1) @ _V[3],
}


@pytest.mark.parametrize("target", [0, 3])
def test_a_sum_of_stacked_branches_conserves_along_any_axis(target):
    _conserves_and_agrees(_BRANCH_SUMS, _XV, np.array([target, target]))
