"""Perturbation methods on channels-first images: the NCHW twin of an NHWC network gets the
same maps, moved to its channel axis."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import attribution as A
from tests.core.test_channels import XF, X, nchw, nhwc

T = np.array([0, 1, 2, 0, 1])


def _last(a):
    return jnp.moveaxis(a, 1, -1)


@pytest.mark.parametrize("window,stride", [
    ((2, 2), 2),          # a spatial window: covers all channels in either layout
    ((3, 2), (2, 1)),     # rectangular, with a spatial stride per axis
    ((4, 4), 2),          # taller than the channel axis (2): an error on NCHW before
    ((3,), 1),            # rows only: the rest of the image and all channels covered
    (2, 2),               # an int: every axis, the channel axis too
])
def test_occlusion_of_the_nchw_twin_is_the_nhwc_map_transposed(window, stride):
    want = A.occlusion(nhwc, X, T, window=window, stride=stride, baseline=0.1)
    got = A.occlusion(nchw, XF, T, window=window, stride=stride, baseline=0.1)
    np.testing.assert_allclose(_last(got), want, rtol=1e-4, atol=1e-6)
    if window == (2, 2):  # each 2x2 patch takes its channels with it: equal over channels
        np.testing.assert_array_equal(got[:, 0], got[:, 1])


def test_a_full_rank_window_is_taken_as_given():
    want = A.occlusion(nhwc, X, T, window=(2, 2, 1), stride=(2, 2, 1))
    got = A.occlusion(nchw, XF, T, window=(1, 2, 2), stride=(1, 2, 2))
    np.testing.assert_allclose(_last(got), want, rtol=1e-4, atol=1e-6)
    assert not np.allclose(got[:, 0], got[:, 1])  # one channel at a time: the channels differ


def test_a_model_without_convolution_keeps_the_leading_axes():
    w = jnp.linspace(-1.0, 1.0, 2 * 8 * 8 * 3).reshape(-1, 3)

    def dense(x):
        return x.reshape(len(x), -1) @ w

    with pytest.warns(UserWarning, match="no convolution"):
        got = A.occlusion(dense, XF, T, window=(1, 2), stride=(1, 2))   # (1, 2, 8): whole rows
    np.testing.assert_array_equal(got[..., 0], got[..., 7])


def test_errors_name_the_window_as_given_and_per_axis():
    with pytest.raises(ValueError, match=r"window \(9, 9\) \(per axis: \(2, 9, 9\)\) exceeds"):
        A.occlusion(nchw, XF, T, window=(9, 9))
    with pytest.raises(ValueError, match=r"stride \(3, 3\) \(per axis: \(1, 3, 3\)\) exceeds "
                                         r"window \(2, 2\) \(per axis: \(2, 2, 2\)\)"):
        A.occlusion(nchw, XF, T, window=(2, 2), stride=(3, 3))
