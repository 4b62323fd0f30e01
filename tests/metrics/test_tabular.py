"""Tabular inputs: no ``"mean"`` across unrelated columns, and groups of columns (a one-hot
encoded category) ranked and removed whole through ``feature_mask``."""

from __future__ import annotations

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import metrics
from tests.metrics._models import tiny_cnn

_W = np.array([1.0, 2.0, 3.0], np.float32)
_X = np.array([[100.0, 0.0, 1.0], [0.0, 5.0, 1.0]], np.float32)   # income, age, a flag


def _tabular(x):
    return jnp.stack([x @ _W, -(x @ _W)], -1)


_MEAN_METRICS = {
    "deletion": lambda b: metrics.deletion(_tabular, _X, 0, _X * _W, steps=3, baseline=b,
                                           output="logit"),
    "insertion": lambda b: metrics.insertion(_tabular, _X, 0, _X * _W, steps=3, baseline=b),
    "pixel_flipping": lambda b: metrics.pixel_flipping(_tabular, _X, 0, _X * _W, steps=3,
                                                       baseline=b),
    "pixel_perturbation": lambda b: metrics.pixel_perturbation(_tabular, _X, _X * _W,
                                                               baseline=b),
    "monotonicity": lambda b: metrics.monotonicity(_tabular, _X, 0, _X * _W, baseline=b),
    "faithfulness_correlation": lambda b: metrics.faithfulness_correlation(
        _tabular, _X, 0, _X * _W, key=jax.random.key(0), subset_size=1, samples=3,
        baseline=b),
    "irof": lambda b: metrics.irof(_tabular, _X, 0, _X * _W, np.array([0, 0, 1]), baseline=b),
}


@pytest.mark.parametrize("name", sorted(_MEAN_METRICS))
def test_a_mean_across_the_columns_of_tabular_input_is_refused(name):
    # the row means [33.7, 2] would end the deletion curve at f = [202, 12]: no row's value
    with pytest.raises(ValueError, match=r'baseline="mean".*x_train\.mean\(0\)'):
        _MEAN_METRICS[name]("mean")


def test_irof_default_mean_is_refused_for_tabular_input_too():
    with pytest.raises(ValueError, match=r"x_train\.mean\(0\)"):
        metrics.irof(_tabular, _X, 0, _X * _W, np.array([0, 0, 1]))


@pytest.mark.parametrize("shape", [(3,), (1, 3)])
def test_a_reference_row_is_the_tabular_mean_baseline(shape):
    row = _X.mean(0).reshape(shape)                          # column means [50, 2.5, 1]
    end = metrics.deletion(_tabular, _X, 0, _X * _W, steps=3, baseline=row,
                           output="logit").values[:, -1]
    np.testing.assert_allclose(end, [58.0, 58.0])


# a linear model on [a, b, one-hot of 4 categories, c]
_MASK = np.array([0, 1, 2, 2, 2, 2, 3])
_WF = np.array([0.5, -1.0, 3.0, -2.0, 0.25, 1.5, 2.0], np.float32)


def _onehot_case():
    rng = np.random.default_rng(0)
    n = 5
    dense = rng.normal(size=(n, 3)).astype(np.float32)
    hot = np.eye(4, dtype=np.float32)[rng.integers(0, 4, n)]
    x = np.concatenate([dense[:, :2], hot, dense[:, 2:]], 1)
    collapsed = np.stack([x[:, 0], x[:, 1], x[:, 2:6] @ _WF[2:6], x[:, 6]], 1)
    wc = np.array([_WF[0], _WF[1], 1.0, _WF[6]], np.float32)
    f = lambda z: jnp.stack([z @ _WF, jnp.zeros(len(z))], -1)        # noqa: E731
    g = lambda z: jnp.stack([z @ wc, jnp.zeros(len(z))], -1)         # noqa: E731
    return f, x, x * _WF, g, collapsed, collapsed * wc


def _hand_group_deletion(x, a, steps, order="morf"):
    """Logits after removing (zeroing) floor(k G / steps) whole groups, ranked by group sums."""
    out = []
    for xi, ai in zip(x.astype(np.float64), a.astype(np.float64)):
        sums = np.array([ai[_MASK == g].sum() for g in range(4)])
        ranked = np.argsort(-sums if order == "morf" else sums, kind="stable")
        row = []
        for k in range(steps + 1):
            gone = np.isin(_MASK, ranked[: k * 4 // steps])
            row.append(np.where(gone, 0.0, xi) @ _WF)
        out.append(row)
    return np.array(out)


@pytest.mark.parametrize("steps, order", [(4, "morf"), (2, "lerf"), (3, "morf")])
def test_deletion_removes_a_one_hot_group_whole(steps, order):
    f, x, a, g, xc, ac = _onehot_case()
    got = metrics.deletion(f, x, 0, a, steps=steps, order=order, output="logit",
                           feature_mask=_MASK)
    np.testing.assert_allclose(got.values, _hand_group_deletion(x, a, steps, order),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.fractions, np.arange(steps + 1) * 4 // steps / 4)
    # the same as the model written with the group collapsed into one column
    want = metrics.deletion(g, xc, 0, ac, steps=steps, order=order, output="logit")
    np.testing.assert_allclose(got.values, want.values, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.area, want.area, rtol=1e-5, atol=1e-5)


def test_insertion_and_the_lerf_change_count_groups_like_the_collapsed_model():
    f, x, a, g, xc, ac = _onehot_case()
    got = metrics.insertion(f, x, 0, a, steps=4, baseline=x.mean(0), output="logit",
                            feature_mask=_MASK)
    want = metrics.insertion(g, xc, 0, ac, steps=4, baseline=xc.mean(0), output="logit")
    np.testing.assert_allclose(got.values, want.values, rtol=1e-5, atol=1e-5)
    got = metrics.pixel_perturbation(f, x, a, target=0, fractions=(0.25, 0.5),
                                     feature_mask=_MASK)
    want = metrics.pixel_perturbation(g, xc, ac, target=0, fractions=(0.25, 0.5))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_mask_per_example_and_its_errors():
    f, x, a, _, _, _ = _onehot_case()
    shared = metrics.deletion(f, x, 0, a, steps=4, output="logit", feature_mask=_MASK)
    per = np.broadcast_to(_MASK + 10 * np.arange(len(x))[:, None], x.shape)   # other ids
    np.testing.assert_array_equal(
        metrics.deletion(f, x, 0, a, steps=4, output="logit", feature_mask=per).values,
        shared.values)
    uneven = per.copy()
    uneven[0, 6] = uneven[0, 0]                                # example 0: 3 groups
    with pytest.raises(ValueError, match="same number of groups"):
        metrics.deletion(f, x, 0, a, steps=4, feature_mask=uneven)
    with pytest.raises(ValueError, match="feature_mask must have one example's shape"):
        metrics.deletion(f, x, 0, a, steps=4, feature_mask=np.zeros(6, int))


def test_one_group_per_pixel_of_an_image_is_the_unmasked_curve():
    f = tiny_cnn()
    nchw = lambda x: f(jnp.moveaxis(x, 1, -1))                # noqa: E731
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 2))
    a = jax.random.normal(jax.random.key(1), x.shape)
    xc, ac = jnp.moveaxis(x, -1, 1), jnp.moveaxis(a, -1, 1)
    pixels = np.arange(64).reshape(8, 8)                      # shared by both channels
    for run in (lambda f, x, a, **kw: metrics.deletion(f, x, 0, a, steps=8, baseline="mean",
                                                       **kw).values,
                lambda f, x, a, **kw: metrics.pixel_perturbation(f, x, a, target=0, **kw)):
        want = run(f, x, a)
        np.testing.assert_allclose(run(f, x, a, feature_mask=pixels[..., None]), want,
                                   rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(run(nchw, xc, ac, feature_mask=pixels[None]), want,
                                   rtol=1e-6, atol=1e-7)


def test_the_tabular_docs_example_scores_the_collapsed_model():
    text = (pathlib.Path(__file__).parents[2] / "docs" / "metrics.md").read_text(encoding="utf-8")
    section = text[text.index("**Tabular inputs.**"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(block.rsplit("metrics.deletion", 1)[0], scope)
    area = eval("metrics.deletion" + block.rsplit("metrics.deletion", 1)[1], scope)
    x, w, x_train = (np.asarray(scope[k]) for k in ("x", "w", "x_train"))
    cols = lambda z: np.stack([z[..., 0], z[..., 1], z[..., 2:6] @ w[2:6, 0], z[..., 6]], -1)
    wc = np.array([w[0, 0], w[1, 0], 1.0, w[6, 0]], np.float32)    # the category as one column
    want = metrics.deletion(lambda z: z @ wc[:, None], cols(x), 0, cols(x) * wc, steps=4,
                            baseline=cols(x_train.mean(0)), output="logit").area
    assert area.shape == (8,)
    np.testing.assert_allclose(area, want, rtol=1e-5, atol=1e-5)
