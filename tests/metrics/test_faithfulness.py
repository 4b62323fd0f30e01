"""Deletion, insertion, pixel flipping and the LeRF change: closed forms and a slow reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import metrics
from jaxplain.metrics import _perturb
from tests.metrics._models import grad as _grad
from tests.metrics._models import tiny_cnn as _tiny_cnn
from tests.metrics._reference import np_blur, np_curve, np_lerf_change


def _linear(n_features=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.normal(size=(n_features, classes)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(classes,)), jnp.float32)
    return (lambda x: x.reshape(len(x), -1) @ w + b), w, b


@pytest.mark.parametrize("steps", [12, 5])
def test_linear_gradient_x_input_gives_exact_deletion_curve(steps):
    f, w, b = _linear()
    x = jax.random.normal(jax.random.key(0), (4, 12))
    t = jnp.array([0, 1, 2, 1])
    a = _grad(f, x, t) * x                      # exact contributions w_it x_i
    c = metrics.deletion(f, x, t, a, steps=steps, output="logit")
    contrib = np.asarray(a, np.float64)
    ranked = -np.sort(-contrib, axis=1)
    for k in range(steps + 1):
        m = k * 12 // steps
        expected = np.asarray(f(x))[np.arange(4), t] - ranked[:, :m].sum(1)
        np.testing.assert_allclose(c.values[:, k], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c.values[:, -1], np.asarray(b)[np.asarray(t)], atol=1e-5)
    np.testing.assert_allclose(c.fractions, [k * 12 // steps / 12 for k in range(steps + 1)])
    # MoRF removes positive contributions first: the curve never rises above LeRF's.
    lerf = metrics.deletion(f, x, t, a, steps=steps, order="lerf", output="logit")
    assert np.all(np.asarray(c.values) <= np.asarray(lerf.values) + 1e-5)
    assert np.all(np.asarray(c.area) < np.asarray(lerf.area))


def test_random_attribution_gives_the_expected_linear_curve():
    # A uniformly random ranking removes each feature with probability m/n after m removals,
    # so E[f_t] falls linearly from f_t(x) to f_t(0) = b_t.
    f, w, b = _linear(n_features=10, classes=2)
    x = jnp.tile(jax.random.normal(jax.random.key(1), (1, 10)), (4000, 1))
    a = jax.random.uniform(jax.random.key(2), x.shape)
    c = metrics.deletion(f, x, 0, a, steps=10, output="logit")
    f0, fb = float(f(x[:1])[0, 0]), float(b[0])
    expected = f0 + (fb - f0) * np.asarray(c.fractions)
    spread = float(jnp.abs(w[:, 0] * x[0]).sum())
    np.testing.assert_allclose(np.asarray(c.values).mean(0), expected, atol=0.05 * spread)
    np.testing.assert_allclose(float(c.area.mean()), (f0 + fb) / 2, atol=0.05 * spread)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(order="lerf", baseline="mean"),
        dict(baseline="blur", absolute=True),
        dict(insert=True, baseline="blur"),
        dict(insert=True, order="lerf", baseline=0.3, output="logit"),
    ],
)
def test_batched_curves_match_the_slow_numpy_loop(kwargs):
    kwargs = dict(kwargs)
    insert = kwargs.pop("insert", False)
    f = _tiny_cnn()
    x = jax.random.uniform(jax.random.key(3), (3, 8, 8, 2))
    t = jnp.array([0, 3, 1])
    a = jax.random.normal(jax.random.key(4), x.shape)
    fn = metrics.insertion if insert else metrics.deletion
    kwargs.setdefault("baseline", "zeros")
    c = fn(f, x, t, a, steps=7, **kwargs)
    fr, values, area = np_curve(f, x, t, a, steps=7, insert=insert, **kwargs)
    np.testing.assert_allclose(c.fractions, fr, rtol=1e-6)
    np.testing.assert_allclose(c.values, values, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(c.area, area, rtol=2e-5, atol=1e-6)


def test_blur_matches_scipy():
    x = jax.random.uniform(jax.random.key(5), (2, 8, 8, 3))
    for sigma in (0.5, 1.0, 2.0):
        np.testing.assert_allclose(_perturb.blur(x, sigma, True), np_blur(x, sigma), atol=1e-5)


def test_pixel_flipping_is_the_logit_deletion_curve():
    f = _tiny_cnn()
    x = jax.random.uniform(jax.random.key(6), (2, 8, 8, 2))
    a = _grad(f, x, jnp.array([1, 2])) * x
    pf = metrics.pixel_flipping(f, x, jnp.array([1, 2]), a, steps=8)
    dl = metrics.deletion(f, x, jnp.array([1, 2]), a, steps=8, output="logit")
    np.testing.assert_array_equal(pf.values, dl.values)
    np.testing.assert_allclose(pf.values[:, 0], f(x)[jnp.arange(2), jnp.array([1, 2])], rtol=1e-5)


def test_chunked_jit_vmap_and_no_retrace():
    f = _tiny_cnn()
    x = jax.random.uniform(jax.random.key(7), (5, 8, 8, 2))
    a = jax.random.normal(jax.random.key(8), x.shape)
    full = metrics.deletion(f, x, 1, a, steps=6)
    chunked = metrics.deletion(f, x, 1, a, steps=6, batch_size=2)
    np.testing.assert_allclose(chunked.values, full.values, rtol=1e-6, atol=1e-7)
    jitted = jax.jit(lambda x, a: metrics.deletion(f, x, 1, a, steps=6).area)(x, a)
    np.testing.assert_allclose(jitted, full.area, rtol=1e-6)
    per_example = jax.vmap(lambda xi, ai: metrics.deletion(f, xi[None], 1, ai[None], steps=6)
                           .values[0])(x, a)
    np.testing.assert_allclose(per_example, full.values, rtol=1e-6, atol=1e-7)
    from jaxplain.metrics import _faithfulness

    before = _faithfulness._curve._cache_size()
    metrics.deletion(f, x + 1.0, 1, a * 2.0, steps=6)
    assert _faithfulness._curve._cache_size() == before


_CLOSED_OVER = {
    "deletion": lambda f, x, t, a: metrics.deletion(f, x, t, a, steps=4).area,
    "insertion": lambda f, x, t, a: metrics.insertion(f, x, t, a, steps=4).area,
    "pixel_flipping": lambda f, x, t, a: metrics.pixel_flipping(f, x, t, a, steps=4).area,
    "pixel_perturbation": lambda f, x, t, a: metrics.pixel_perturbation(f, x, a, target=t),
    "completeness": lambda f, x, t, a: metrics.completeness(f, x, t, a),
    "conservation": lambda f, x, t, a: metrics.conservation(f, x, t, a),
    "continuity": lambda f, x, t, a: metrics.continuity(f, x, t, _grad, key=jax.random.key(0),
                                                        samples=2),
    "max_sensitivity": lambda f, x, t, a: metrics.max_sensitivity(
        f, x, t, _grad, key=jax.random.key(0), samples=2),
}


@pytest.mark.parametrize("name", sorted(_CLOSED_OVER))
def test_a_closed_over_concrete_target_works_under_jit_and_is_range_checked(name):
    # A concrete jax array closed over by a jitted function is not a tracer, but jnp ops on it
    # inside jit are staged out: the range check used to fail on int(t.min()).
    run = _CLOSED_OVER[name]
    f = _tiny_cnn()
    x = jax.random.uniform(jax.random.key(7), (3, 8, 8, 2))
    a = jax.random.normal(jax.random.key(8), x.shape)
    t = jnp.argmax(f(x), axis=-1)
    eager = run(f, x, t, a)
    jitted = jax.jit(lambda x, a: run(f, x, t, a))(x, a)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)
    closed_x = jax.jit(lambda a: run(f, x, t, a))(a)       # x and t closed over
    np.testing.assert_allclose(closed_x, eager, rtol=1e-5, atol=1e-6)
    bad = jnp.array([0, 1, 4])                              # f returns 4 logits
    with pytest.raises(ValueError, match=r"target must lie in \[0, 4\).*\[0, 4\]"):
        jax.jit(lambda x, a: run(f, x, bad, a))(x, a)


def test_a_closed_over_input_with_nan_is_still_rejected_under_jit():
    f = _tiny_cnn()
    x = jax.random.uniform(jax.random.key(7), (2, 8, 8, 2)).at[0, 0, 0, 0].set(jnp.nan)
    a = jnp.ones(x.shape)
    with pytest.raises(ValueError, match="x contains NaN"):
        jax.jit(lambda a: metrics.deletion(f, x, 0, a, steps=4).area)(a)


def test_lerf_change_matches_reference_and_plumbing():
    f = _tiny_cnn()
    x = jax.random.uniform(jax.random.key(9), (3, 8, 8, 2))
    a = jax.random.normal(jax.random.key(10), x.shape)
    q = (0.0, 0.01, 0.05, 0.1, 0.5)
    got = metrics.pixel_perturbation(f, x, a, fractions=q)
    target = np.asarray(jnp.argmax(f(x), -1))
    np.testing.assert_allclose(got, np_lerf_change(f, x, a, target, q), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(got[:, 0], 0.0)       # q = 0 changes nothing
    assert _perturb.fraction_counts(64, q) == (0, 0, 3, 6, 32)


def test_insertion_and_lerf_change_chunked_equal_unchunked():
    f = _tiny_cnn()
    x = jax.random.uniform(jax.random.key(11), (5, 8, 8, 2))
    a = jax.random.normal(jax.random.key(12), x.shape)
    full = metrics.insertion(f, x, 2, a, steps=5)
    np.testing.assert_allclose(metrics.insertion(f, x, 2, a, steps=5, batch_size=3).values,
                               full.values, rtol=1e-6, atol=1e-7)
    q = (0.05, 0.2)
    np.testing.assert_allclose(metrics.pixel_perturbation(f, x, a, fractions=q, batch_size=2),
                               metrics.pixel_perturbation(f, x, a, fractions=q),
                               rtol=1e-5, atol=1e-7)


def test_lerf_removes_exactly_the_planned_pixels():
    # The map is the pixel index, so LeRF removes pixels 0, 1, 2, ... in order; the model's
    # logit counts the ones left, so p reveals how many were removed.
    x = jnp.ones((1, 8, 8, 1))
    index_map = jnp.arange(64.0).reshape(1, 8, 8, 1)
    weights = jnp.zeros(64).at[:6].set(1.0)               # only pixels 0..5 matter
    f = lambda x: jnp.stack([x.reshape(len(x), -1) @ weights, jnp.zeros(len(x))], 1)  # noqa
    q = (0.05, 0.1)                                        # int(q 64) = 3 and 6 pixels
    got = np.asarray(metrics.pixel_perturbation(f, x, index_map, target=0, fractions=q))
    sig = lambda z: 1 / (1 + np.exp(-z))                   # noqa: E731
    expected = [abs(sig(6) - sig(6 - m)) / sig(6) for m in (3, 6)]
    np.testing.assert_allclose(got[0], expected, rtol=1e-5)


def test_lerf_change_is_finite_where_the_target_probability_underflows():
    # p_c(x) = sigmoid(-120) underflows to 0 in float32; the relative change is still exact:
    # removing the one weighted pixel moves the logit from -120 to -121.
    x = jnp.ones((1, 4))
    f = lambda x: jnp.stack([x @ jnp.array([1.0, 0.0, 0.0, 0.0]) - 121.0, jnp.zeros(len(x))], 1)  # noqa
    assert float(jax.nn.softmax(f(x))[0, 0]) == 0.0
    got = np.asarray(metrics.pixel_perturbation(f, x, jnp.array([[0.0, 1.0, 2.0, 3.0]]),
                                                target=0, fractions=(0.25,)))
    np.testing.assert_allclose(got, [[1 - np.exp(-1.0)]], rtol=1e-5)


def test_errors_name_the_argument():
    f, _, _ = _linear()
    x = jnp.ones((2, 12))
    a = jnp.ones((2, 12))
    with pytest.raises(ValueError, match="attribution must have the shape of x"):
        metrics.deletion(f, x, 0, jnp.ones((2, 11)))
    with pytest.raises(ValueError, match=r"target must lie in \[0, 3\)"):
        metrics.deletion(f, x, 3, a)
    with pytest.raises(TypeError, match="target must be an int"):
        metrics.deletion(f, x, 0.5, a)
    for metric in (metrics.deletion, metrics.pixel_flipping):
        with pytest.raises(ValueError, match="target is required"):
            metric(f, x, None, a)
    with pytest.raises(ValueError, match="baseline must be one of"):
        metrics.deletion(f, x, 0, a, baseline="gray")
    with pytest.raises(ValueError, match="needs inputs that a convolution reads"):
        metrics.insertion(f, x, 0, a, baseline="blur")
    with pytest.raises(ValueError, match="does not broadcast"):
        metrics.deletion(f, x, 0, a, baseline=jnp.ones(5))
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        metrics.deletion(f, x, 0, a, steps=0)
    with pytest.raises(ValueError, match="order must be one of"):
        metrics.deletion(f, x, 0, a, order="random")
    with pytest.raises(ValueError, match="x contains NaN"):
        metrics.deletion(f, x.at[0, 0].set(jnp.nan), 0, a)
    with pytest.raises(ValueError, match="fractions must be"):
        metrics.pixel_perturbation(f, x, a, fractions=(1.5,))
    with pytest.raises(ValueError, match="f must map x"):
        metrics.deletion(lambda x: x.sum(), x, 0, a)


def _softmax_head(seed=0):
    """A logits model and the same model with a softmax output head."""
    rng = np.random.default_rng(seed)
    w1 = jnp.asarray(rng.normal(size=(48, 16)) * 0.5, jnp.float32)
    w2 = jnp.asarray(rng.normal(size=(16, 4)) * 2.0, jnp.float32)

    def logits(x):
        return jax.nn.relu(x.reshape(len(x), -1) @ w1) @ w2

    return logits, lambda x: jax.nn.softmax(logits(x))


def test_a_softmax_head_is_read_as_its_own_probabilities():
    logits, probs = _softmax_head()
    x = jax.random.uniform(jax.random.key(1), (4, 4, 4, 3))
    t = jnp.argmax(logits(x), -1)
    a = _grad(logits, x, t) * x
    p_t = np.asarray(probs(x))[np.arange(4), np.asarray(t)]
    assert p_t.max() > 0.99  # a second softmax would read about 0.47 here
    for curve in (metrics.deletion, metrics.insertion):
        got = curve(probs, x, t, a, steps=6)                 # output="probability"
        want = curve(logits, x, t, a, steps=6)               # the same probabilities
        np.testing.assert_allclose(got.values, want.values, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.area, want.area, rtol=1e-5, atol=1e-6)
        end = 0 if curve is metrics.deletion else -1         # the unperturbed input
        np.testing.assert_allclose(got.values[:, end], p_t, rtol=1e-5)
    flipped = metrics.pixel_flipping(probs, x, t, a, steps=6)  # output="logit": as given
    np.testing.assert_allclose(flipped.values[:, 0], p_t, rtol=1e-5)
    np.testing.assert_allclose(
        metrics.pixel_perturbation(probs, x, a, target=t),
        metrics.pixel_perturbation(logits, x, a, target=t), rtol=1e-4, atol=1e-6)
    gap = metrics.completeness(probs, x, t, a, output="probability")
    np.testing.assert_allclose(
        gap, metrics.completeness(logits, x, t, a, output="probability"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        metrics.conservation(probs, x, t, a, output="probability"),
        np.asarray(a).reshape(4, -1).sum(1) - p_t, rtol=1e-5, atol=1e-5)


def test_a_softmax_head_under_jit():
    logits, probs = _softmax_head(1)
    x = jax.random.uniform(jax.random.key(2), (3, 4, 4, 3))
    t = np.array([0, 1, 2])
    a = jax.random.normal(jax.random.key(3), x.shape)
    want = metrics.deletion(logits, x, t, a, steps=4).values
    got = jax.jit(lambda x, a: metrics.deletion(probs, x, t, a, steps=4).values)(x, a)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_zero_probability_in_the_lerf_change_is_finite():
    # the model's own p_t underflows to 0 at x and after removal: no change, not NaN
    x = jnp.ones((1, 4))
    f = lambda x: jax.nn.softmax(jnp.stack([x @ jnp.array([1.0, 0, 0, 0]) - 200.0,  # noqa: E731
                                            jnp.zeros(len(x))], 1))
    got = metrics.pixel_perturbation(f, x, jnp.array([[0.0, 1.0, 2.0, 3.0]]), target=0,
                                     fractions=(0.25,))
    np.testing.assert_array_equal(got, [[0.0]])


def test_a_sigmoid_head_is_read_as_its_own_probabilities():
    # multi-label: each output a probability of its own, not to be softmaxed over the labels
    logits, _ = _softmax_head()
    labels = lambda x: jax.nn.sigmoid(logits(x))
    x = jax.random.uniform(jax.random.key(1), (4, 4, 4, 3))
    t = np.array([0, 1, 2, 0])
    a = jax.random.normal(jax.random.key(3), x.shape)
    p_t = np.asarray(labels(x))[np.arange(4), t]
    got = metrics.deletion(labels, x, t, a, steps=4)                      # output="probability"
    np.testing.assert_allclose(got.values[:, 0], p_t, rtol=1e-6)
    np.testing.assert_allclose(got.values, metrics.deletion(labels, x, t, a, steps=4,
                                                            output="logit").values)
    change = metrics.pixel_perturbation(labels, x, a, target=t, fractions=(0.25,))
    removed = metrics.deletion(labels, x, t, a, steps=4, order="lerf", absolute=True)
    np.testing.assert_allclose(change[:, 0], np.abs(p_t - np.asarray(removed.values[:, 1])) / p_t,
                               rtol=1e-4)


@pytest.mark.parametrize("metric", [metrics.deletion, metrics.insertion, metrics.pixel_perturbation])
def test_one_output_is_refused_a_softmax(metric):
    w = jnp.arange(12.0).reshape(12, 1) / 12
    regression = lambda x: x.reshape(len(x), -1) @ w
    x = jax.random.uniform(jax.random.key(0), (3, 2, 2, 3))
    a = jnp.ones_like(x)
    with pytest.raises(ValueError, match="one output, whose softmax is always 1"):
        metric(regression, x, a, target=0) if metric is metrics.pixel_perturbation else \
            metric(regression, x, 0, a)
    if metric is not metrics.pixel_perturbation:  # read as it is on request
        curve = metric(regression, x, 0, a, steps=2, output="logit")
        end = 0 if metric is metrics.deletion else -1
        np.testing.assert_allclose(curve.values[:, end], regression(x)[:, 0], rtol=1e-6)


def _unseen_heads(logits):
    """Probability heads whose program does not end in a softmax the trace recognises."""
    once = jax.jit(logits)
    return {
        "clip(softmax)": lambda x: jnp.clip(jax.nn.softmax(logits(x)), 1e-7, 1.0),
        "softmax * 1.0": lambda x: jax.nn.softmax(logits(x)) * 1.0,
        "exp(log_softmax)": lambda x: jnp.exp(jax.nn.log_softmax(logits(x))),
        "exp(z) / sum(exp(z)), z jitted": lambda x: jnp.exp(once(x)) / jnp.exp(once(x)).sum(
            -1, keepdims=True),
    }


@pytest.mark.parametrize("name", sorted(_unseen_heads(lambda x: x)))
def test_a_probability_head_the_program_does_not_show_gets_no_second_softmax(name):
    logits, _ = _softmax_head()
    probs = _unseen_heads(logits)[name]
    x = jax.random.uniform(jax.random.key(1), (4, 4, 4, 3))
    t = jnp.argmax(logits(x), -1)
    a = _grad(logits, x, t) * x
    p_t = np.asarray(probs(x))[np.arange(4), np.asarray(t)]
    twice = np.asarray(jax.nn.softmax(probs(x)))[np.arange(4), np.asarray(t)]
    assert np.abs(p_t - twice).min() > 0.1                  # a second softmax would show
    for curve, end in ((metrics.deletion, 0), (metrics.insertion, -1)):
        got = curve(probs, x, t, a, steps=6)
        np.testing.assert_allclose(got.values[:, end], p_t, rtol=1e-5)
        np.testing.assert_allclose(got.values, curve(logits, x, t, a, steps=6).values,
                                   rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        metrics.completeness(probs, x, t, a, output="probability"),
        metrics.completeness(logits, x, t, a, output="probability"), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        metrics.pixel_perturbation(probs, x, a, target=t, baseline="blur"),
        metrics.pixel_perturbation(logits, x, a, target=t, baseline="blur"),
        rtol=2e-3, atol=1e-6)


def test_insertion_starts_from_a_blur_of_images_and_zeros_for_other_inputs():
    f, _, _ = _linear()
    v = jax.random.normal(jax.random.key(0), (3, 12))
    a = jax.random.normal(jax.random.key(1), v.shape)
    np.testing.assert_array_equal(metrics.insertion(f, v, 0, a, steps=4).values,
                                  metrics.insertion(f, v, 0, a, steps=4, baseline="zeros").values)
    g = _tiny_cnn()
    x = jax.random.uniform(jax.random.key(2), (2, 8, 8, 2))
    b = jax.random.normal(jax.random.key(3), x.shape)
    np.testing.assert_array_equal(metrics.insertion(g, x, 0, b, steps=4).values,
                                  metrics.insertion(g, x, 0, b, steps=4, baseline="blur").values)


def test_a_channel_summed_map_ranks_as_the_full_one():
    f = _tiny_cnn()
    x = jax.random.uniform(jax.random.key(4), (3, 8, 8, 2))
    t = jnp.array([0, 3, 1])
    a = jax.random.normal(jax.random.key(5), x.shape)
    summed = a.sum(-1, keepdims=True)                       # (3, 8, 8, 1)
    for fn in (metrics.deletion, metrics.insertion, metrics.pixel_flipping):
        for absolute in (False, True):
            got = fn(f, x, t, summed, steps=7, absolute=absolute)
            want = fn(f, x, t, jnp.broadcast_to(summed, x.shape), steps=7, absolute=absolute)
            np.testing.assert_array_equal(got.area, want.area)
        # the pixels rank by their channel sums, as the full map's do
        np.testing.assert_array_equal(fn(f, x, t, summed, steps=7).values,
                                      fn(f, x, t, a, steps=7).values)
    np.testing.assert_array_equal(metrics.pixel_perturbation(f, x, summed, target=t),
                                  metrics.pixel_perturbation(f, x, a, target=t))
    np.testing.assert_allclose(metrics.completeness(f, x, t, summed),
                               metrics.completeness(f, x, t, a), rtol=1e-5, atol=1e-5)
    for shape in ((3, 8, 8), (3, 8, 8, 3), (1, 8, 8, 2)):   # other ranks and sizes stay refused
        with pytest.raises(ValueError, match=r"attribution must have the shape of x .*size 1"):
            metrics.deletion(f, x, t, jnp.ones(shape))


@pytest.mark.parametrize("bad", [jnp.inf, -jnp.inf, jnp.nan])
def test_attributions_with_inf_or_nan_are_refused(bad):
    f = _tiny_cnn()
    x = jax.random.uniform(jax.random.key(6), (3, 8, 8, 2))
    a = jax.random.normal(jax.random.key(7), x.shape).at[1, 2, 3, 0].set(bad)
    message = r"attribution contains NaN or inf \(examples \[1\] of 3\)"
    for run in (lambda: metrics.deletion(f, x, 0, a),
                lambda: metrics.insertion(f, x, 0, a),
                lambda: metrics.pixel_perturbation(f, x, a),
                lambda: metrics.completeness(f, x, 0, a),
                lambda: metrics.conservation(f, x, 0, a),
                lambda: metrics.sparseness(a),
                lambda: metrics.complexity(a)):
        with pytest.raises(ValueError, match=message):
            run()
