"""Low precision: the metrics compute in float32 at least whatever the model's dtype (bfloat16,
float16) and return that dtype (docs/metrics.md, "Low precision").

The models round float32 values to bfloat16 once, at the end: the same bits in and out of
``jit`` (a product in bfloat16 may keep excess precision inside it), so a float64 NumPy
computation from the same values is the reference.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import metrics

BF16 = jnp.bfloat16
W = jnp.asarray(np.random.RandomState(0).randint(-3, 4, (8, 3)), jnp.float32)
X = jnp.asarray(np.random.RandomState(1).randint(-2, 3, (4, 8)), jnp.float32)
T = np.array([0, 1, 2, 0])
ROWS = np.arange(4)


def logits(x):
    """bfloat16 logits of a linear model with integer weights (exact in float32 before)."""
    return (x.astype(jnp.float32) @ W * 0.37).astype(BF16)


def head(x):
    """A bfloat16 probability head that patterns miss: a clipped softmax, read by its values
    (at temperature 10, whose near-uniform rows bfloat16 rounds off a sum of 1 by 0.002)."""
    return jnp.clip(jax.nn.softmax(x.astype(jnp.float32) @ W * 0.1), 1e-7, 1).astype(BF16)


def softmax64(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("output", ["logit", "probability"])
def test_completeness_and_conservation_are_not_rounded_to_bfloat16(output):
    x = X.astype(BF16)
    a = (jax.random.normal(jax.random.key(0), x.shape) * 3).astype(BF16)
    read = np.asarray if output == "logit" else softmax64
    fx = read(np.asarray(logits(x), np.float64))[ROWS, T]
    fb = read(np.asarray(logits(jnp.full_like(x, 1.0)), np.float64))[ROWS, T]
    total = np.asarray(a, np.float64).sum(axis=1)  # the same values, summed in float64
    gap = metrics.completeness(logits, x, T, a, baseline=1.0, output=output)
    kept = metrics.conservation(logits, x, T, a, output=output)
    assert gap.dtype == kept.dtype == jnp.float32
    scale = np.abs(total).max()
    np.testing.assert_allclose(np.asarray(gap, np.float64), total - (fx - fb), atol=1e-6 * scale)
    np.testing.assert_allclose(np.asarray(kept, np.float64), total - fx, atol=1e-6 * scale)


def test_a_bfloat16_probability_head_is_read_as_given():
    # its rows sum to 1 within bfloat16's tolerance (0.03), not float32's (1e-3): the check
    # is made in the model's dtype, the sums in float32
    x = X.astype(BF16)
    a = jnp.ones(x.shape, BF16)
    p = np.asarray(head(x), np.float64)
    assert np.abs(p.sum(axis=1) - 1).max() > 1e-3  # a float32 check would softmax it again
    kept = metrics.conservation(head, x, T, a, output="probability")
    np.testing.assert_allclose(np.asarray(kept, np.float64), 8 - p[ROWS, T], atol=1e-6)


@pytest.mark.parametrize("name", ["deletion", "insertion"])
def test_curve_area_is_the_trapezoid_of_its_values(name):
    # fractions, values and area came back in bfloat16, the area 0.022 off the trapezoid of
    # its own values on a digits CNN (1e-6 in float32)
    x = X.astype(BF16)
    a = x * W[:, 0].astype(BF16)
    curve = getattr(metrics, name)(logits, x, T, a, steps=8, output="logit", baseline="zeros")
    assert curve.fractions.dtype == curve.values.dtype == curve.area.dtype == jnp.float32
    values = np.asarray(curve.values, np.float64)
    fractions = np.arange(9) * 8 // 8 / 8  # floor(k n / steps) / n with n = steps = 8
    np.testing.assert_array_equal(np.asarray(curve.fractions, np.float64), fractions)
    area = np.trapezoid(values, fractions, axis=-1)
    assert not np.array_equal(area, np.asarray(area, BF16).astype(np.float64))  # > 8 bits
    np.testing.assert_allclose(np.asarray(curve.area, np.float64), area,
                               atol=1e-6 * np.abs(values).max())


def softmax_head(x):
    """A bfloat16 ``jax.nn.softmax`` head, recognised in the traced program."""
    return jax.nn.softmax(x.astype(jnp.float32) @ W * 0.1).astype(BF16)


def test_pixel_perturbation_of_a_bfloat16_softmax_head_in_float32():
    # |1 - p~/p| from the head's own probabilities, as exp(log p~ - log p): the logs were
    # taken in bfloat16 (0.4% of |log p|) and the result came back in bfloat16
    x = X.astype(BF16)
    a = jnp.arange(1.0, 9.0)[None].repeat(4, axis=0)  # feature 0 is the least relevant
    ours = metrics.pixel_perturbation(softmax_head, x, a, target=T, fractions=(0.25, 0.5))
    assert ours.dtype == jnp.float32
    p = np.asarray(softmax_head(x), np.float64)[ROWS, T]
    expected = [np.abs(1 - np.asarray(softmax_head(x.at[:, :k].set(0)), np.float64)[ROWS, T] / p)
                for k in (2, 4)]
    np.testing.assert_allclose(np.asarray(ours, np.float64), np.stack(expected, 1), atol=1e-6)


def test_robustness_draws_the_float32_noise_and_reduces_in_float32_for_bfloat16_inputs():
    # A bfloat16 input gets the float32 draws of the same key (before: draws in bfloat16, other
    # numbers altogether) and the norms are taken in float32, so its scores are the float32
    # input's up to the input's own rounding.
    v = jnp.asarray(np.random.RandomState(2).normal(size=(3, 3)), jnp.float32)
    net = lambda x: jnp.tanh(x.astype(jnp.float32) @ W) @ v                  # noqa: E731
    grad = lambda f, x, t: jax.vmap(jax.grad(lambda u, k: f(u[None])[0, k]))(x, t)  # noqa: E731
    x = jnp.asarray(np.random.RandomState(4).uniform(-0.5, 0.5, (2, 8)), jnp.float32)
    x = x.astype(BF16).astype(jnp.float32)                  # exactly representable in bfloat16
    for score, kw in ((metrics.continuity, dict(stdev=0.05)),
                      (metrics.max_sensitivity, dict(radius=0.05))):
        wide = score(net, x, T[:2], grad, key=jax.random.key(3), samples=8, **kw)
        narrow = score(net, x.astype(BF16), T[:2], grad, key=jax.random.key(3), samples=8, **kw)
        assert narrow.dtype == jnp.float32 and float(wide.min()) > 0
        np.testing.assert_allclose(narrow, wide, rtol=0.03)
