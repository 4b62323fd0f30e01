"""A head that masks classes with -inf is the head of the classes left (KL and gradient count
only classes of positive probability), and a loss that is not finite is never kept silently:
at the start it is refused, later it warns."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import subnet
from jaxplain.subnet import _optimize
from jaxplain.subnet._objective import kl_divergence, log_probs

W1 = jax.random.normal(jax.random.key(0), (6, 16))
W2 = 0.5 * jax.random.normal(jax.random.key(1), (16, 4))
X = jax.random.normal(jax.random.key(2), (12, 6))
ALLOWED = jnp.asarray([True, True, False, False])
KW = dict(sites="hidden", key=jax.random.key(0), l1=1e-3, steps=150, finetune_steps=30)


def _base(x):
    with jax.named_scope("hidden"):
        h = x @ W1
    return jax.nn.relu(h) @ W2


def _masked(x):  # softmax: exactly the softmax of the two allowed logits
    return jnp.where(ALLOWED, _base(x), -jnp.inf)


def _two(x):
    return _base(x)[:, :2]


def test_kl_and_its_gradient_skip_classes_of_probability_zero():
    z = _base(X)
    z_sub = 0.7 * z + 0.1
    masked, masked_sub = (jnp.where(ALLOWED, v, -jnp.inf) for v in (z, z_sub))
    kl = lambda logits, sub: kl_divergence(log_probs(logits), sub)  # noqa: E731
    # The same value as the two-class head, computed in float64 by hand.
    lp = np.asarray(z[:, :2], np.float64)
    lq = np.asarray(z_sub[:, :2], np.float64)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    lq = lq - np.log(np.exp(lq).sum(-1, keepdims=True))
    expected = np.mean(np.sum(np.exp(lp) * (lp - lq), -1))
    np.testing.assert_allclose(float(kl(masked, masked_sub)), expected, rtol=1e-5)
    # The gradient is the two-class head's on the allowed classes, 0 elsewhere (was NaN).
    grad = jax.grad(lambda s: kl(masked, s))(masked_sub)
    two = jax.grad(lambda s: kl(z[:, :2], s))(z_sub[:, :2])
    assert bool(jnp.all(jnp.isfinite(grad)))
    np.testing.assert_allclose(grad[:, :2], two, rtol=1e-5, atol=1e-8)
    assert bool(jnp.all(grad[:, 2:] == 0))


def test_extract_on_a_masked_head_equals_the_two_logit_head():
    masked, two = subnet.extract(_masked, X, **KW), subnet.extract(_two, X, **KW)
    # Was: KL nan, every score still 1, nothing removed.
    assert float(masked.region_kl) == pytest.approx(float(two.region_kl), rel=1e-4, abs=1e-7)
    assert masked.kept_units == two.kept_units and sum(two.kept_units.values()) < 16
    np.testing.assert_allclose(masked.scores["hidden"], two.scores["hidden"], rtol=1e-4,
                               atol=1e-6)
    fid = subnet.fidelity(_masked, two, X)
    assert float(fid.kl) == pytest.approx(float(subnet.fidelity(_two, two, X).kl), rel=1e-4)


def test_a_nan_loss_is_never_the_kept_iterate():
    params = {"scores": {"a": jnp.ones(3)}, "theta": {"a": jnp.zeros(())}}
    phase = _optimize.Phase("sigmoid", True, "adam", 1e-2, 100.0)
    state = _optimize.init_state(params, 4, phase)
    nan = jnp.asarray(jnp.nan, jnp.float32)
    # A first feasible iterate of loss NaN used to be kept, and nothing beats NaN after it.
    state = _optimize._keep_best(state, params, nan, jnp.asarray(1.0), 1.0)
    assert not bool(state["best_feasible"])
    later = jax.tree.map(lambda a: a * 0.5, params)
    state = _optimize._keep_best(state, later, jnp.asarray(0.3), jnp.asarray(1.0), 1.0)
    assert bool(state["best_feasible"]) and float(state["best_loss"]) == pytest.approx(0.3)
    np.testing.assert_array_equal(state["best"]["scores"]["a"], later["scores"]["a"])


def test_a_model_with_nan_outputs_is_refused_before_optimising(monkeypatch):
    bad = X.at[3, 0].set(1e3)

    def f(x):  # NaN logits for an input out of range
        return _base(x) + jnp.where(x[:, :1] > 100, jnp.nan, 0.0)

    monkeypatch.setattr(subnet._extract._optimize, "run", lambda *a, **k: pytest.fail("ran"))
    with pytest.raises(ValueError, match=r"NaN for 1 of the 12 samples.*not finite at the start"):
        subnet.extract(f, bad, **KW)


def test_a_loss_that_turns_nan_warns_naming_the_step():
    floor = 0.9 * float(jax.nn.relu(X @ W1).sum(-1).min())

    def f(x):  # NaN once an example's kept activity falls below 90% of the least one's
        with jax.named_scope("hidden"):
            h = x @ W1
        a = jax.nn.relu(h)
        return a @ W2 + 0.0 * jnp.log(a.sum(-1, keepdims=True) - floor)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sub = subnet.extract(f, X, **dict(KW, l1=0.1))
    said = [w for w in caught if "not finite" in str(w.message)]
    assert len(said) == 1 and said[0].filename == __file__, [str(w.message) for w in caught]
    assert "step" in str(said[0].message) and "l1=0.1" in str(said[0].message)
    assert np.isfinite(float(sub.region_kl))
