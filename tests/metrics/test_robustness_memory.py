"""Memory of max-sensitivity, continuity and the local Lipschitz estimate: ``batch_size`` noisy
copies (their draws, copies and maps) are held at a time, in a call and inside the caller's
``jit``, while the draws and so the scores stay those of the whole ``(samples, *shape)`` draw of
each example, whatever ``batch_size``; ``compare`` passes its ``batch_size`` on."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A
from jaxplain import metrics

W1 = jax.random.normal(jax.random.key(0), (3, 3, 3, 8)) * 0.3
W2 = jax.random.normal(jax.random.key(1), (8, 5))
X = jax.random.uniform(jax.random.key(2), (2, 8, 8, 3))
T = jnp.array([1, 3])
KEY = jax.random.key(3)
METRICS = (metrics.max_sensitivity, metrics.continuity, metrics.local_lipschitz)


def cnn(x):
    h = jax.lax.conv_general_dilated(x, W1, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.tanh(h).mean(axis=(1, 2)) @ W2


@pytest.mark.parametrize("kind", ["uniform", "normal"])
@pytest.mark.parametrize("key", [jax.random.key(4), jax.random.PRNGKey(4),
                                 jax.random.key(4, impl="rbg")], ids=["key", "raw", "rbg"])
def test_a_row_drawn_alone_is_the_row_of_the_whole_draw(kind, key):
    from jaxplain.metrics._robustness import draw_noise, draw_row

    for example in (jnp.zeros((5, 7, 3)), jnp.zeros((4, 6), jnp.bfloat16)):
        whole = draw_noise(key, 0.3, example, 9, kind)
        rows = jax.jit(jax.vmap(lambda s: draw_row(key, 0.3, example, s, 9, kind)))(
            jnp.arange(9))
        assert rows.dtype == whole.dtype == jnp.float32
        np.testing.assert_allclose(rows, whole, rtol=1e-6, atol=1e-7)


def _temp_bytes(fn, samples, batch_size):
    score = lambda x: fn(cnn, x, T, A.gradient, key=KEY, samples=samples,  # noqa: E731
                         batch_size=batch_size)
    return jax.jit(score).lower(X).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("fn", METRICS)
def test_batch_size_bounds_the_compiled_memory_inside_jit(fn):
    grows = _temp_bytes(fn, 64, None) / _temp_bytes(fn, 8, None)
    bounded = _temp_bytes(fn, 64, 4) / _temp_bytes(fn, 8, 4)
    assert grows > 4, grows        # all 64 copies at once: about 8x the memory of 8
    assert bounded < 1.5, bounded  # 4 copies at a time, whatever the samples


@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("fn", METRICS)
def test_batch_size_bounds_the_arrays_alive_in_a_call(fn, batch_size):
    live = []

    def method(f, x, t):  # the bytes of all JAX arrays alive, at each call (or trace)
        live.append(sum(a.nbytes for a in jax.live_arrays()))
        return A.gradient(f, x, t)

    fn(cnn, X, T, method, key=KEY, samples=64, batch_size=batch_size)
    growth = max(live[1:]) - live[0]  # over the call on x, before the copies
    assert growth < 2 * (batch_size + 2) * X.nbytes, growth / X.nbytes  # not 64 copies


@pytest.mark.parametrize("fn", METRICS)
def test_the_scores_do_not_depend_on_batch_size_nor_on_jit(fn):
    run = lambda b: fn(cnn, X, T, A.gradient_x_input, key=KEY, samples=7,  # noqa: E731
                       batch_size=b)
    want = run(None)
    for b in (1, 3):
        np.testing.assert_allclose(run(b), want, rtol=1e-5)
    jitted = jax.jit(lambda x: fn(cnn, x, T, A.gradient_x_input, key=KEY, samples=7,
                                  batch_size=3))(X)
    np.testing.assert_allclose(jitted, want, rtol=1e-5)


@pytest.mark.parametrize("name", ["continuity", "max_sensitivity"])
def test_compare_passes_batch_size_to_the_robustness_metrics(name):
    calls = []

    def method(f, x, t):
        calls.append(x.shape)
        return A.gradient(f, x, t)

    direct = getattr(metrics, name)(cnn, X, T, method, key=KEY, samples=4, batch_size=1)
    per_copy = len(calls)  # x, then each copy on its own
    calls.clear()
    table = metrics.compare(cnn, X, T, {"g": method}, (name,), key=KEY, samples=4, batch_size=1)
    assert len(calls) == 1 + per_copy  # the map of x, then the metric as called directly
    np.testing.assert_allclose(table.rows[0][1], float(direct.mean()), rtol=1e-6)
