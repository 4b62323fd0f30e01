"""Network dissection IoU on hand-made masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import concepts


def test_iou_on_hand_masks():
    # Two images 3x3, two units, two concepts.
    acts = np.zeros((2, 3, 3, 2), np.float32)
    acts[0, 0, :, 0] = 1.0        # unit 0 fires on image 0's top row (3 pixels)
    acts[1, :, 0, 1] = 1.0        # unit 1 fires on image 1's left column (3 pixels)
    masks = np.zeros((2, 3, 3, 2), bool)
    masks[0, 0, :2, 0] = True     # concept 0: two of the top-row pixels of image 0
    masks[1, :, 0, 0] = True      # ... and the left column of image 1
    masks[0, 2, 2, 1] = True      # concept 1: one corner pixel
    got = np.asarray(concepts.iou(acts, masks, thresholds=jnp.array([0.5, 0.5])))
    # unit 0 vs concept 0: inter 2, union 3 + 5 - 2 = 6; unit 1 vs concept 0: inter 3, union 5.
    np.testing.assert_allclose(got, [[2 / 6, 0.0], [3 / 5, 0.0]], rtol=1e-6)


def test_quantile_threshold_and_resizing():
    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(4, 6, 6, 1)) > 0.8
    acts = masks.astype(np.float32) + 0.01 * rng.uniform(size=masks.shape).astype(np.float32)
    acts = np.concatenate([acts, rng.uniform(size=masks.shape).astype(np.float32)], -1)
    frac = masks.mean()
    got = np.asarray(concepts.iou(acts, masks, quantile=1 - frac + 1e-3))
    assert got[0, 0] > 0.95 and got[1, 0] < 0.3
    small = concepts.iou(acts[:, ::2, ::2], masks, quantile=0.8)  # resized to 6x6
    assert small.shape == (2, 1) and np.all((0 <= small) & (small <= 1))


def test_dissect_finds_the_unit_that_draws_each_concept():
    # A "model" whose site is the image itself with its channels swapped: unit 0 shows concept 1
    # and unit 1 concept 0, so dissection must pair them crosswise with IoU 1.
    def f(x):
        with jax.named_scope("site"):
            h = x[..., ::-1] * 1.0
        return jnp.mean(h, axis=(1, 2))

    rng = np.random.default_rng(1)
    masks = rng.uniform(size=(5, 6, 6, 2)) > 0.7
    # Zero off the mask, so any quantile below the masks' share thresholds at 0: exact masks.
    x = jnp.asarray(masks * (1.0 + rng.uniform(size=masks.shape)), jnp.float32)
    got = np.asarray(concepts.dissect(f, x, masks, site="site", quantile=0.5))
    np.testing.assert_allclose(got, np.asarray(concepts.iou(x[..., ::-1], masks, quantile=0.5)))
    assert got.shape == (2, 2)
    np.testing.assert_allclose([got[0, 1], got[1, 0]], 1.0)
    assert got[0, 0] < 0.5 and got[1, 1] < 0.5


def test_dissect_takes_explicit_thresholds_as_iou_does():
    # dissect had no thresholds= (concepts.md: "pass thresholds= to use any other rule").
    def f(x):
        with jax.named_scope("site"):
            h = x[..., ::-1] * 1.0
        return jnp.mean(h, axis=(1, 2))

    rng = np.random.default_rng(2)
    masks = rng.uniform(size=(5, 6, 6, 2)) > 0.7
    x = jnp.asarray(masks * (1.0 + rng.uniform(size=masks.shape)), jnp.float32)
    exact = np.asarray(concepts.dissect(f, x, masks, site="site", thresholds=jnp.zeros(2)))
    np.testing.assert_allclose([exact[0, 1], exact[1, 0]], 1.0)   # on exactly where drawn
    high = jnp.array([1.5, 1.8])                   # on in part of each mask, less at 1.8
    got = np.asarray(concepts.dissect(f, x, masks, site="site", thresholds=high))
    same = concepts.iou(x[..., ::-1], masks, thresholds=high)
    np.testing.assert_allclose(got, np.asarray(same))
    assert 1.0 > got[0, 1] > got[1, 0] > 0.0
    with pytest.raises(ValueError, match=r"thresholds must have shape \(2,\)"):
        concepts.dissect(f, x, masks, site="site", thresholds=jnp.zeros(3))


def test_errors():
    a = np.zeros((2, 3, 3, 2), np.float32)
    with pytest.raises(TypeError, match="boolean"):
        concepts.iou(a, np.zeros((2, 3, 3, 1)))
    with pytest.raises(ValueError, match="NHWC"):
        concepts.iou(a[0], np.zeros((2, 3, 3, 1), bool))
    with pytest.raises(ValueError, match="masks"):
        concepts.iou(a, np.zeros((3, 3, 3, 1), bool))
    with pytest.raises(ValueError, match="quantile"):
        concepts.iou(a, np.zeros((2, 3, 3, 1), bool), quantile=1.5)
