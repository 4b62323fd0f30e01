"""``batch_size=None`` chunks by :mod:`jaxplain.core._chunks` on CPU (one pass elsewhere) with
the one-pass results, no extra compilation; and the docs' recipe for an odd last batch."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A
from jaxplain import metrics
from jaxplain.attribution._integrated import _integrated_gradients
from jaxplain.core import _chunks

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "attribution.md"
RNG = np.random.default_rng(0)
KERNEL = RNG.normal(size=(3, 3, 1, 4)) * 0.5
DENSE = RNG.normal(size=(4, 3))
X = RNG.uniform(size=(3, 8, 8, 1))
TARGET = np.array([0, 1, 2])


def _model(dtype):
    """A fresh tiny CNN (a new function: a new static argument, traced anew) in `dtype`."""
    kernel, dense = jnp.asarray(KERNEL, dtype), jnp.asarray(DENSE, dtype)

    def f(x):
        h = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.tanh(h).mean(axis=(1, 2)) @ dense

    return f


METHODS = {  # name: (call with batch_size, the items of one pass)
    "integrated_gradients": (lambda f, x, b: A.integrated_gradients(
        f, x, TARGET, steps=8, batch_size=b), 8),
    "smoothgrad": (lambda f, x, b: A.smoothgrad(
        f, x, TARGET, key=jax.random.key(0), samples=6, batch_size=b), 6),
    "occlusion": (lambda f, x, b: A.occlusion(
        f, x, TARGET, window=(4, 4), stride=2, batch_size=b), 9),
    "deletion": (lambda f, x, b: metrics.deletion(
        f, x, TARGET, x, steps=10, batch_size=b).values, 3 * 11),
}


def _scans(jaxpr) -> int:
    """The loops (scan, while) in `jaxpr` and its sub-jaxprs."""
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name in ("scan", "while")
        for sub in _chunks._sub_jaxprs(eqn):
            count += _scans(sub)
    return count


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("dtype, rtol", [(jnp.float32, 1e-5), (jnp.float64, 1e-12)])
def test_auto_chunks_on_cpu_and_equals_one_pass(name, dtype, rtol, monkeypatch):
    call, items = METHODS[name]
    with jax.enable_x64(dtype == jnp.float64):
        f, x = _model(dtype), jnp.asarray(X, dtype)
        one_pass = np.asarray(call(f, x, items))
        monkeypatch.setattr(_chunks, "BUDGET", 1)  # every item its own pass
        chunked = jax.make_jaxpr(lambda v: call(f, v, None))(x).jaxpr
        assert _scans(chunked) >= 1, "batch_size=None did not chunk over the budget"
        auto = np.asarray(call(f, x, None))
    assert auto.dtype == one_pass.dtype
    scale = np.abs(one_pass).max()
    np.testing.assert_allclose(auto, one_pass, rtol=0, atol=rtol * scale)


def test_a_small_pass_stays_one_pass_and_gpu_takes_every_item(monkeypatch):
    f, x = _model(jnp.float32), jnp.asarray(X, jnp.float32)
    ig = lambda v: A.integrated_gradients(f, v, TARGET, steps=8)  # noqa: E731
    assert _scans(jax.make_jaxpr(ig)(x).jaxpr) == 0  # the digits-sized pass fits the budget
    monkeypatch.setattr(_chunks, "BUDGET", 1)
    fn, xs = (lambda a: a * 2.0), jnp.ones((8, 4))
    assert _chunks.auto_chunk(None, fn, xs) == 1
    assert _chunks.auto_chunk(3, fn, xs) == 3  # an explicit batch_size keeps its meaning
    monkeypatch.setattr(_chunks.jax, "default_backend", lambda: "gpu")
    assert _chunks.auto_chunk(None, fn, xs) == 8


def test_pass_bytes_counts_the_values_of_the_items_not_the_weights():
    weights = jnp.ones((1000, 16))  # 64 kB of weights, transposed inside: not counted
    fn = lambda v: jnp.tanh(v @ weights.T.T)  # noqa: E731
    assert _chunks.pass_bytes(fn, jnp.ones((2, 1000))) == 2 * 2 * 16 * 4  # dot, tanh


@pytest.mark.parametrize("m, c, chunk", [(50, 12, 10), (50, 16, 10), (47, 16, 16), (13, 12, 7), (8, 1, 1),
                                         (64, 64, 64), (30, 100, 30)])
def test_even_chunk_avoids_a_small_last_chunk(m, c, chunk):
    assert _chunks.even_chunk(m, c) == chunk


def test_auto_chunks_add_no_compilation(monkeypatch):
    monkeypatch.setattr(_chunks, "BUDGET", 1)
    f = _model(jnp.float32)
    A.integrated_gradients(f, jnp.asarray(X, jnp.float32), TARGET, steps=8)
    before = _integrated_gradients._cache_size()
    A.integrated_gradients(f, jnp.asarray(X[::-1], jnp.float32), TARGET, steps=8)
    assert _integrated_gradients._cache_size() == before


def test_the_docs_padding_recipe_gives_the_unpadded_attributions_in_one_compilation():
    # a ```py fence: the section's one-example test (test_docs_migration.py) reads ```python
    section = DOC.read_text().split("**The odd last batch.**", 1)[1]
    scope = {}
    exec(compile(re.search(r"```py\n(.*?)```", section, re.S).group(1), str(DOC), "exec"),
         scope)  # noqa: S102 - our own documentation
    f = _model(jnp.float32)
    images = jnp.asarray(RNG.uniform(size=(10, 8, 8, 1)), jnp.float32)
    labels = jnp.asarray(RNG.integers(0, 3, size=10))
    compiled = _integrated_gradients._cache_size()
    padded = scope["explain_in_batches"](A.integrated_gradients, f, images, labels, batch=4,
                                         steps=8)
    assert _integrated_gradients._cache_size() == compiled + 1  # batches 4, 4 and 2 + 2
    unpadded = [A.integrated_gradients(f, images[s:s + 4], labels[s:s + 4], steps=8)
                for s in (0, 4, 8)]
    assert padded.shape == images.shape
    np.testing.assert_allclose(padded, np.concatenate(unpadded), rtol=1e-5, atol=1e-7)


def test_one_step_per_pass_on_a_time_major_stem_frontier():
    """With one IG step per pass (batch_size=1, or the automatic chunk on a big model), a model
    whose affine stem ends in time-major values (a scan over ``swapaxes(x, 0, 1)`` from a carry
    computed from x) takes the vmapped path: folding assumed a batch-first frontier and failed
    to reshape it."""
    k = jax.random.split(jax.random.key(7), 3)
    w_in, w_h, w_out = (0.5 * jax.random.normal(k[0], (4, 6)),
                        0.3 * jax.random.normal(k[1], (6, 6)), jax.random.normal(k[2], (6, 3)))

    def f(x):  # (batch, time, 4)
        h, _ = jax.lax.scan(lambda h, x_t: (jnp.tanh(x_t @ w_in + h @ w_h), None),
                            x[:, 0] @ jnp.zeros((4, 6)), jnp.swapaxes(x, 0, 1))
        return jax.nn.relu(h) @ w_out

    x, t = jax.random.normal(jax.random.key(8), (2, 3, 4)), jnp.array([0, 2])
    one = A.integrated_gradients(f, x, t, steps=4, batch_size=1)
    np.testing.assert_allclose(one, A.integrated_gradients(f, x, t, steps=4, batch_size=4),
                               rtol=1e-5, atol=1e-6)
