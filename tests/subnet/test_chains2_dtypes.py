"""bfloat16 and float16 regions are accepted, and the KL of half-precision logits is computed
in float32: in the objective (the search's choices, region_kl) and in fidelity()."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import subnet
from jaxplain.subnet._objective import kl_divergence, log_probs

W1 = jax.random.normal(jax.random.key(0), (6, 16))
W2 = 0.5 * jax.random.normal(jax.random.key(1), (16, 3))
X = jax.random.normal(jax.random.key(2), (12, 6))
KW = dict(sites="hidden", key=jax.random.key(0), l1=1e-3, steps=150, finetune_steps=30)


def _net(dtype):
    w1, w2 = W1.astype(dtype), W2.astype(dtype)

    def f(x):
        with jax.named_scope("hidden"):
            h = x.astype(dtype) @ w1
        return jax.nn.relu(h) @ w2
    return f


def _kl64(z, z_sub):
    """Mean KL(softmax z || softmax z_sub) in float64 by NumPy, from the logits as given."""
    lp, lq = (np.asarray(v.astype(jnp.float32), np.float64) for v in (z, z_sub))
    lp = lp - np.log(np.exp(lp - lp.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - lp.max(-1, keepdims=True)
    lq = lq - np.log(np.exp(lq - lq.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - lq.max(-1, keepdims=True)
    return float(np.mean(np.sum(np.exp(lp) * (lp - lq), -1)))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_a_half_precision_region_is_accepted(dtype):
    f = _net(jnp.float32)
    # Was: TypeError "x_region must have a floating dtype; got bfloat16" (NumPy's issubdtype).
    sub = subnet.extract(f, X.astype(dtype), **KW)
    assert float(sub.region_agreement) == 1.0
    assert 0 < sum(sub.kept_units.values()) < 16
    with pytest.raises(TypeError, match="floating dtype"):
        subnet.extract(f, (X > 0).astype(jnp.int32), **KW)


def test_kl_of_bfloat16_logits_is_float32():
    z = _net(jnp.bfloat16)(X)
    z_sub = (0.97 * z.astype(jnp.float32) + 0.01).astype(jnp.bfloat16)
    kl = kl_divergence(log_probs(z), z_sub)
    assert kl.dtype == jnp.float32
    # Was computed in bfloat16: off by about its rounding (2**-8), far above a small KL.
    assert float(kl) == pytest.approx(_kl64(z, z_sub), rel=1e-4, abs=1e-8)


def test_region_kl_and_fidelity_of_bfloat16_logits_are_float32():
    f32 = _net(jnp.float32)
    f = lambda x: f32(x).astype(jnp.bfloat16)  # noqa: E731  (rounded once, at the end)
    sub = subnet.extract(f, X, **KW)
    expected = _kl64(f(X), subnet.apply(f, sub)(X))
    assert expected > 0
    fid = subnet.fidelity(f, sub, X)
    assert fid.kl.dtype == jnp.float32
    assert float(fid.kl) == pytest.approx(expected, rel=1e-3, abs=1e-8)
    assert float(sub.region_kl) == pytest.approx(expected, rel=1e-3, abs=1e-8)
