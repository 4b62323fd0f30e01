"""Exact ties of constant maps: faithfulness correlation 0 (not rounding noise correlated), IROF
segments in id order whatever their sizes; the docs' SSIM and Quantus statements."""

from __future__ import annotations

import inspect
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import metrics
from jaxplain.metrics import _perturb
from jaxplain.metrics._similarity import _pearson
from tests.metrics._models import tiny_cnn

CONSTANTS = (0.1, 0.3, 0.7, 1.0, 1.3, 2.9, 1e-3)


@pytest.fixture(scope="module")
def case():
    x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 2))
    f = tiny_cnn()
    return f, x, f(x).argmax(-1)


def test_faithfulness_correlation_of_a_constant_map_is_zero(case):
    f, x, t = case
    for c in CONSTANTS:   # every subset sums subset_size equal relevances: the sums are constant
        r = metrics.faithfulness_correlation(f, x, t, jnp.full_like(x, c), key=jax.random.key(1),
                                             subset_size=10, samples=30)
        np.testing.assert_array_equal(r, 0.0, err_msg=f"constant map {c}")


def test_pearson_calls_last_bit_noise_constant_and_measures_small_real_variation():
    rng = np.random.default_rng(0)
    b = rng.normal(size=(5, 40)).astype(np.float32)
    for c in CONSTANTS:   # a constant with one-ulp perturbations, correlated with b
        up = np.nextafter(np.float32(c), np.float32(np.inf))
        noisy = np.where(b > 0, up, np.float32(c))
        np.testing.assert_array_equal(_pearson(jnp.asarray(noisy), jnp.asarray(b)), 0.0)
        np.testing.assert_array_equal(_pearson(jnp.asarray(b), -jnp.asarray(noisy)), 0.0)
    # variation of 1e-5 relative (about 80 ulps) is signal: r agrees with float64
    for c in CONSTANTS:
        a = (c * (1 + 1e-5 * rng.uniform(size=b.shape))).astype(np.float32)
        a64 = a.astype(np.float64)
        expected = [np.corrcoef(a64[i], b[i])[0, 1] for i in range(len(b))]
        np.testing.assert_allclose(_pearson(jnp.asarray(a), jnp.asarray(b)), expected,
                                   atol=2e-3)
    # and a well-spread pair is unchanged by the test
    a = rng.normal(size=b.shape).astype(np.float32) + 0.5 * b
    expected = [np.corrcoef(a[i].astype(np.float64), b[i])[0, 1] for i in range(len(b))]
    np.testing.assert_allclose(_pearson(jnp.asarray(a), jnp.asarray(b)), expected, atol=1e-6)
    np.testing.assert_allclose(_pearson(jnp.asarray(a * 1e30), jnp.asarray(b * 1e-30)), expected,
                               atol=1e-6)   # no square over- or underflows


def _unequal_segments():
    return np.minimum(np.arange(64).reshape(8, 8) // 5, 11)   # eleven of 5 pixels, one of 9


def test_group_means_of_a_constant_map_tie_exactly_whatever_the_segment_sizes():
    values = np.random.default_rng(1).uniform(1e-3, 10, 200)
    c = np.concatenate([CONSTANTS, values]).astype(np.float32)   # one constant map a row
    ids = np.tile(_unequal_segments().ravel(), (len(c), 1))
    for order in ("morf", "lerf"):
        rank = _perturb.group_ranks(jnp.asarray(np.repeat(c[:, None], 64, 1)), jnp.asarray(ids),
                                    jnp.full(len(c), 12), 12, order, mean=True)
        wrong = np.flatnonzero((np.asarray(rank) != ids).any(1))
        assert wrong.size == 0, f"{order}: constants {c[wrong]} not in id order"


def test_group_means_still_rank_by_the_mean():
    rng = np.random.default_rng(2)
    seg = _unequal_segments().ravel()
    s = rng.normal(size=(3, 64)).astype(np.float32)
    means = np.array([[s[i, seg == g].astype(np.float64).mean() for g in range(12)]
                      for i in range(3)])
    for order, key in (("morf", -means), ("lerf", means)):
        rank = _perturb.group_ranks(jnp.asarray(s), jnp.asarray(np.tile(seg, (3, 1))),
                                    jnp.array([12, 12, 12]), 12, order, mean=True)
        expected = np.argsort(np.argsort(key, axis=1, kind="stable"), axis=1)[:, seg]
        np.testing.assert_array_equal(rank, expected)


def test_irof_of_a_constant_map_removes_the_segments_by_id(case):
    f, x, t = case
    seg = _unequal_segments()
    by_id = metrics.irof(f, x, t, jnp.asarray(-seg, jnp.float32)[None, ..., None]
                         * jnp.ones_like(x), seg)   # means strictly falling with the id
    for c in CONSTANTS:
        got = metrics.irof(f, x, t, jnp.full_like(x, c), seg)
        np.testing.assert_array_equal(got, by_id, err_msg=f"constant map {c}")


def _metrics_md() -> str:
    path = pathlib.Path(__file__).parents[2] / "docs" / "metrics.md"
    return " ".join(path.read_text(encoding="utf-8").split())


def test_the_ssim_docs_give_the_settings_scikit_image_needs():
    params = inspect.signature(metrics.ssim).parameters
    win, rng = params["win_size"].default, params["data_range"].default
    text = _metrics_md()
    assert f"structural_similarity(a, b, win_size={win}, data_range={rng:g})" in text
    assert "scikit-image's default is 7" in text


def test_the_quantus_numpy_note_names_every_metric_that_calls_calculate_auc():
    text = _metrics_md()
    note = text[text.index("`np.trapz`") - 200:][:900]
    for name in ("IROF", "PixelFlipping", "RegionPerturbation", "Selectivity", "calculate_auc"):
        assert name in note, name
