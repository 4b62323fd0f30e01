"""Fixes from the second pathways trial: exact random-mask counts, the report's example count,
NeuronIntGrad's alphas in float64, a callable target, kept units off in the masked forward, and
apply refusing masks of another batch size."""

import math
import pathlib
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import pathways as pw

_K = jax.random.split(jax.random.key(0), 4)
_W1 = jax.random.normal(_K[0], (5, 10))
_W2 = jax.random.normal(_K[1], (10, 100)) / 3.0
_W3 = jax.random.normal(_K[2], (100, 3)) / 10.0


def _mlp(x):  # two ReLU sites, of 10 and 100 units
    return jax.nn.relu(jax.nn.relu(x @ _W1) @ _W2) @ _W3


_X = jax.random.normal(_K[3], (3, 5))


def test_random_masks_keep_the_exact_share_of_units():
    """Per example and site, kept = units - floor((1 - keep) * units) in exact arithmetic: with
    keep = j/100, exactly j of 100 units and ceil(j/10) of 10 (keep=0.9 of 10 kept all 10,
    0.8 kept 9, as the float product (1 - keep) * units fell just below the integer)."""
    for keep in [j / 100 for j in range(1, 101)]:
        masks = pw.random_masks(jax.random.key(1), _mlp, _X, keep=keep)
        for m in masks.values():
            units = m.shape[1]
            want = units - math.floor((1 - Fraction(str(keep))) * units)
            assert want == math.ceil(round(keep * units, 9))  # the closed form, for these keeps
            np.testing.assert_array_equal(np.asarray(m).sum(1), want, err_msg=f"keep={keep}")


def test_random_masks_take_a_float32_keep_as_written():
    masks = pw.random_masks(jax.random.key(1), _mlp, _X, keep=np.float32(0.2))
    assert [int(m[0].sum()) for m in masks.values()] == [2, 20]


def test_the_report_counts_the_examples_it_used():
    """The section said "of 8 test examples" on data holding 5: the requested count."""
    from types import SimpleNamespace

    from jaxplain.pathways._demo import demo_section
    from jaxplain.report import DemoContext

    x = np.asarray(jax.random.normal(jax.random.key(2), (5, 5)), np.float32)
    ctx = DemoContext(model=_mlp, variables=None, f=_mlp, data=SimpleNamespace(x_test=x),
                      key=jax.random.key(0), quick=True, noun="examples")
    text = demo_section(ctx).text
    assert f"of {len(x)} test examples" in text and "of 8 test" not in text


def test_integrated_contributions_in_float64_match_a_float64_hand_sum():
    """The alphas j/T were float32 whatever x was: relative error 9e-9 against a float64 hand
    sum on a smooth head (a float32 alpha of 1/3 is off by 1e-8)."""
    with jax.enable_x64(True):
        k = jax.random.split(jax.random.key(0), 3)
        w1 = jax.random.normal(k[0], (4, 6), jnp.float64)
        w2 = jax.random.normal(k[1], (6, 3), jnp.float64)
        x = jax.random.normal(k[2], (2, 4), jnp.float64)
        g = lambda z: jnp.tanh(jnp.tanh(z @ w1) @ w2)  # noqa: E731
        steps = 3
        got = pw.integrated_contributions(g, x, 0, sites="tanh", steps=steps)["tanh"]
        a = jnp.tanh(x @ w1)
        head = lambda alpha, d: jnp.tanh((alpha * a + d) @ w2)[:, 0].sum()  # noqa: E731
        total = sum(jax.grad(head, argnums=1)(j / steps, jnp.zeros_like(a))
                    for j in range(steps + 1))
        want = jnp.abs(a * total / (steps + 1))
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(got, want, rtol=1e-13)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_integrated_contributions_run_in_low_precision(dtype):
    x = _X.astype(dtype)
    f = lambda z: _mlp(z.astype(jnp.float32)).astype(dtype)  # noqa: E731
    got = pw.integrated_contributions(f, x, 0, steps=2)
    ref = pw.integrated_contributions(_mlp, _X, 0, steps=2)
    for name, s in got.items():
        assert bool(jnp.isfinite(s).all())
        np.testing.assert_allclose(np.asarray(s, np.float32), ref[name], rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("call", [
    lambda t: pw.pathway_gradient(_mlp, _X, t, keep=0.2),
    lambda t: pw.contributions(_mlp, _X, t),
    lambda t: pw.greedy_masks(_mlp, _X, t, rounds=2),
])
def test_a_callable_target_gets_the_attribution_message(call):
    from jaxplain import attribution

    with pytest.raises(TypeError) as ours:
        call(lambda y: jnp.argmax(y, -1))
    with pytest.raises(TypeError) as theirs:
        attribution.gradient(_mlp, _X, lambda y: jnp.argmax(y, -1))
    assert str(ours.value).startswith(str(theirs.value))
    assert "target=None" in str(ours.value)  # pathways' own way to the predicted class


def test_kept_units_may_be_off_in_the_masked_forward_and_carry_no_gradient():
    """docs/pathways.md said every kept unit was strictly active, so f^m is affine around x
    until a kept unit changes sign; kept units are active in the original network only. A
    kept unit off in the masked forward passes nothing: its gradient through the masked network
    is zero, and the pathway gradient equals the gradient of the network masked without it."""
    with jax.enable_x64(True):
        k = jax.random.split(jax.random.key(5), 4)
        w1 = jax.random.normal(k[0], (6, 40), jnp.float64)
        w2 = jax.random.normal(k[1], (40, 40), jnp.float64) / 6.0
        b2 = -0.5 * jnp.ones(40, jnp.float64)
        w3 = jax.random.normal(k[2], (40, 3), jnp.float64)
        f = lambda z: jax.nn.relu(jax.nn.relu(z @ w1) @ w2 + b2) @ w3  # noqa: E731
        x = jax.random.normal(k[3], (8, 6), jnp.float64)
        masks = pw.select(f, x, 0, keep=0.2)
        m1, m2 = (jnp.asarray(masks[n], jnp.float64) for n in ("relu", "relu_1"))
        a1 = jax.nn.relu(x @ w1)
        z2_orig, z2_masked = a1 @ w2 + b2, (a1 * m1) @ w2 + b2
        assert bool((z2_orig[m2 > 0] > 0).all())  # kept: active in the original network
        off = (m2 > 0) & (z2_masked <= 0)
        assert int(off.sum()) > 0  # ... yet some are off in the masked forward
        pg = pw.pathway_gradient(f, x, 0, keep=0.2)
        without = {"relu": masks["relu"], "relu_1": masks["relu_1"] & ~off}
        np.testing.assert_allclose(pg, pw.masked_gradient(f, x, 0, without), rtol=1e-12,
                                   atol=1e-14)
    page = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "pathways.md").read_text()
    page = " ".join(page.split())
    assert "every kept unit was strictly active at `x`, so" not in page
    assert "in the masked forward some kept units may be off at `x` itself" in page


def test_apply_refuses_masks_of_another_batch_as_masked_gradient_does():
    one = pw.select(_mlp, _X[:1], None, keep=0.3)
    with pytest.raises(ValueError, match="batch") as grad_err:
        pw.masked_gradient(_mlp, _X, None, one)
    with pytest.raises(ValueError, match="batch") as apply_err:
        pw.apply(_mlp, one)(_X)
    assert str(apply_err.value) == str(grad_err.value)
    with pytest.raises(ValueError, match="batch"):
        pw.apply(_mlp, pw.select(_mlp, _X, None, keep=0.3))(_X[:1])


def test_apply_with_matching_masks_is_unchanged_under_jit_and_vjp():
    masks = pw.select(_mlp, _X, 0, keep=0.3)
    h = pw.apply(_mlp, masks)
    np.testing.assert_allclose(jax.jit(h)(_X), h(_X), rtol=1e-6)
    g = jax.grad(lambda z: h(z)[:, 0].sum())(_X)
    np.testing.assert_allclose(g, pw.masked_gradient(_mlp, _X, 0, masks), rtol=1e-6, atol=1e-7)
    traced = jax.jit(lambda z, m: pw.apply(_mlp, m)(z))(_X, dict(masks))
    np.testing.assert_allclose(traced, h(_X), rtol=1e-6)
