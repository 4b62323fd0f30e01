"""DeepLIFT at a max or min that is no max pool: a maxout unit's ``z.max(-1)`` over its pieces
(the channel axis), a ``z.min(-1)`` and a global min pool ``h.min((1, 2))`` take Captum's
max rule (a min as ``-max(-z)``), so the attributions sum to ``f(x)_t - f(b)_t`` (before, the
plain gradient missed by up to 3.3, silently) and equal a float64 hand transcription of the
rule. They stay no site, and LRP sends their relevance to the maximum as before. A softmax,
log-softmax or sort inside the model has no rule: DeepLIFT warns, naming it."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jp
from jaxplain import attribution as A
from jaxplain import lrp as L

RNG = np.random.default_rng(6)
W = RNG.normal(size=(6, 8, 3))  # 8 maxout units of 3 pieces each
HEAD = RNG.normal(size=(8, 3))
X, B = RNG.normal(size=(4, 6)), RNG.normal(size=(4, 6))
T = np.array([0, 1, 2, 0])


def _pieces(x):
    return jnp.einsum("bi,ijk->bjk", x, W)  # (n, 8 units, 3 pieces)


MODELS = {
    "maxout": lambda x: _pieces(x).max(-1) @ HEAD,
    "minout": lambda x: _pieces(x).min(-1) @ HEAD,
    "global_min_pool": lambda x: _pieces(x).reshape(-1, 4, 2, 3).min((1, 2)),
}


def _reference(kind, x, b, t):
    """Float64 DeepLIFT of `kind` by hand: the rule at each unit's max (min) between the
    input's and the baseline's pieces, then the linear head and the linear pieces."""
    attr = np.zeros_like(x)
    pick = np.argmax if kind == "maxout" else np.argmin
    for i in range(len(x)):
        z, zr = np.einsum("i,ijk->jk", x[i], W), np.einsum("i,ijk->jk", b[i], W)
        if kind == "global_min_pool":  # units are (4 * 2) positions of 3 channels
            z, zr = z.reshape(8, 3).T, zr.reshape(8, 3).T  # (3 channels, 8 positions)
            g, w = np.eye(3)[t[i]], W.transpose(0, 2, 1)
        else:
            g, w = HEAD[:, t[i]], W
        y, yr = z[np.arange(len(z)), pick(z, 1)], zr[np.arange(len(z)), pick(zr, 1)]
        m = np.maximum(y, yr) if kind == "maxout" else np.minimum(y, yr)
        parts = np.zeros_like(z)  # each unit's difference split between the two extrema
        parts[np.arange(len(z)), pick(z, 1)] += g * (m - yr)
        parts[np.arange(len(z)), pick(zr, 1)] += g * (y - m)
        multiplier = parts / (z - zr)  # d(output) / d(piece), rescaled
        attr[i] = (x[i] - b[i]) * np.einsum("ijk,jk->i", w, multiplier)
    return attr


@pytest.mark.parametrize("kind", list(MODELS))
def test_deeplift_sums_to_the_gap_and_equals_the_hand_rule(kind):
    f = MODELS[kind]
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("error")  # ruled now: no warning either
        a = np.asarray(A.deeplift(f, jnp.asarray(X), jnp.asarray(T), baseline=jnp.asarray(B)))
        gap = np.asarray(f(X)[np.arange(4), T] - f(B)[np.arange(4), T])
    np.testing.assert_allclose(a.sum(1), gap, atol=1e-10)
    np.testing.assert_allclose(a, _reference(kind, X, B, T), atol=1e-10)


@pytest.mark.parametrize("kind", list(MODELS))
def test_deeplift_shap_and_a_zero_baseline_sum_to_the_gap(kind):
    """A zero baseline ties all pieces of every unit at 0; DeepLIFT-SHAP averages baselines."""
    f = MODELS[kind]
    with jax.enable_x64(True):
        x = jnp.asarray(X)
        a = A.deeplift(f, x, 0)
        np.testing.assert_allclose(a.sum(1), f(x)[:, 0] - f(jnp.zeros_like(x))[:, 0],
                                   atol=1e-10)
        bs = jnp.asarray(RNG.normal(size=(3, 6)))
        s = A.deeplift_shap(f, x, 0, baselines=bs)
        np.testing.assert_allclose(s.sum(1), f(x)[:, 0] - f(bs)[:, 0].mean(), atol=1e-10)


def test_a_max_or_min_over_the_channels_is_no_site_and_lrp_still_conserves():
    """Other methods see no change: the same sites, and LRP's relevance still goes to the
    maximum (minimum) through the max's gradient, conserved."""
    with jax.enable_x64(True):
        x = jnp.asarray(X)
        for kind in ("maxout", "minout"):
            f = MODELS[kind]
            assert [s.op for s in jp.sites(f, x)] == ["dense", "dense"]
            r = A.lrp(f, x, 0, rules=L.Epsilon(0.0), scale_by_logit=True)
            np.testing.assert_allclose(r.sum(1), f(x)[:, 0], atol=1e-10)


W1, W2 = RNG.normal(size=(6, 8)).astype(np.float32), RNG.normal(size=(8, 3)).astype(np.float32)
INNER = {
    "softmax": lambda x: jax.nn.softmax(x @ W1, -1) @ W2,
    "log_softmax": lambda x: jax.nn.log_softmax(x @ W1, -1) @ W2,
    "sort": lambda x: jnp.sort(x @ W1, -1)[:, -3:],
}


@pytest.mark.parametrize("op", list(INNER))
@pytest.mark.parametrize("method", ["deeplift", "deeplift_shap"])
def test_an_inner_softmax_or_sort_is_warned_about_by_name(op, method):
    x = jnp.asarray(X, jnp.float32)
    extra = {"baselines": jnp.zeros((2, 6))} if method == "deeplift_shap" else {}
    with pytest.warns(UserWarning, match=rf"{method}: .*mix several values \('{op}'") as w:
        getattr(A, method)(INNER[op], x, 0, **extra)
    assert [m.filename for m in w.list] == [__file__] * len(w.list)  # the caller's line


def test_an_output_softmax_gets_only_its_own_warning():
    f = lambda x: jax.nn.softmax(jax.nn.relu(x @ W1) @ W2)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        A.deeplift(f, jnp.asarray(X, jnp.float32), 0)
    assert [str(m.message)[:37] for m in w] == ["deeplift: the model's output is a jax"]
