"""ReLU6 in the spellings of ported models is one ``relu6`` activation, as ``jax.nn.relu6`` is:
``jnp.minimum(jax.nn.relu(h), 6)`` (the Keras-port spelling), the bound first, and
``jnp.clip`` of a ReLU. Its site is named ``relu6``, LRP-0 conserves the target's relevance on
a bias-free net and DeepLIFT's attributions sum to ``f(x) - f(0)``. Before, the ``jax.nn.relu``
stayed a ``relu`` and the ``min`` had no rule: LRP-0 summed to [0.148, -2.541, 0.822, 0.495]
instead of 1, DeepLIFT missed the gap by up to 7.8."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution as A
from jaxplain import lrp as L

_W1 = jax.random.normal(jax.random.key(0), (4, 16)) * 3  # pre-activations well past 6
_W2 = jax.random.normal(jax.random.key(1), (16, 3))
_X = jax.random.normal(jax.random.key(2), (4, 4))
_T = jnp.array([0, 1, 2, 0])

_SPELLINGS = {
    "minimum(relu(h), 6)": lambda h: jnp.minimum(jax.nn.relu(h), 6.0),
    "minimum(6, relu(h))": lambda h: jnp.minimum(6.0, jax.nn.relu(h)),
    "clip(relu(h), 0, 6)": lambda h: jnp.clip(jax.nn.relu(h), 0, 6),
    "minimum(where(h > 0, h, 0), 6)": lambda h: jnp.minimum(jnp.where(h > 0, h, 0.0), 6.0),
}


@pytest.mark.parametrize("name", sorted(_SPELLINGS))
def test_relu6_spellings_are_one_relu6(name):
    act = _SPELLINGS[name]
    f = lambda x: act(x @ _W1) @ _W2  # noqa: E731
    reference = lambda x: jax.nn.relu6(x @ _W1) @ _W2  # noqa: E731
    assert [s.name for s in jp.sites(f, _X)] == ["linear", "relu6", "linear_1"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        lrp = A.lrp(f, _X, _T, rules=L.Epsilon(1e-9))
        dl = A.deeplift(f, _X, _T)
    np.testing.assert_allclose(lrp.sum(1), 1.0, atol=1e-4)  # conservation, no biases
    gap = (f(_X) - f(jnp.zeros_like(_X)))[jnp.arange(4), _T]
    np.testing.assert_allclose(dl.sum(1), gap, rtol=1e-4, atol=1e-4)  # summation-to-delta
    np.testing.assert_allclose(dl, A.deeplift(reference, _X, _T), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(A.gradient(f, _X, _T), A.gradient(reference, _X, _T), atol=1e-6)


def test_a_relu_read_elsewhere_too_stays_a_relu_there():
    f = lambda x: (lambda h: jnp.minimum(jax.nn.relu(h), 6.0) + 0.5 * jax.nn.relu(h))(x @ _W1) @ _W2  # noqa: E731
    names = [s.name for s in jp.sites(f, _X)]
    assert "relu6" in names and "relu" in names
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        dl = A.deeplift(f, _X, _T)
    gap = (f(_X) - f(jnp.zeros_like(_X)))[jnp.arange(4), _T]
    np.testing.assert_allclose(dl.sum(1), gap, rtol=1e-4, atol=1e-4)
