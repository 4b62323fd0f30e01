"""How the report draws inputs and attributions: one grey polarity in every figure, colour
scales from the finite values only, zero lines and legends where a reader needs them."""

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jaxplain.report._display import BAD, map_grid, show_input, show_map  # noqa: E402


def _rgba(ax):
    """The colours an axis' image is drawn with, ``(h, w, 4)``."""
    image = ax.get_images()[0]
    return image.to_rgba(image.get_array())


def test_samples_figure_draws_inputs_as_the_attribution_grid_does():
    from jaxplain.report._foundation import _samples_figure

    rng = np.random.default_rng(0)
    span = np.array([1.0, 0.5, 3.0])[:, None, None, None]  # examples of different ranges
    x = rng.uniform(size=(3, 8, 8, 1)) * span
    y = np.arange(3)
    samples = _samples_figure(x, y, y, cols=3)
    grid = map_grid(x, {"map": x}, y)
    for i in range(3):
        np.testing.assert_allclose(_rgba(samples.axes[i]), _rgba(grid.axes[2 * i]))
        brightest = np.unravel_index(np.argmax(x[i, ..., 0]), (8, 8))
        np.testing.assert_allclose(_rgba(samples.axes[i])[brightest], (1, 1, 1, 1))  # high: white
    plt.close("all")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("shape", [(8, 8, 1), (16, 3)])  # an image; a sequence drawn as one
def test_a_non_finite_value_leaves_the_colour_scale_to_the_finite_ones(bad, shape):
    a = np.ones(shape)
    a[(0,) * len(shape)] = bad
    fig, ax = plt.subplots()
    with pytest.warns(RuntimeWarning, match=r"1 of \d+ attribution values are not finite"):
        show_map(ax, a)
    rgba = _rgba(ax)  # (h, w) or (channels, length); the non-finite value at [0, 0]
    finite = np.ones(rgba.shape[:2], bool)
    finite[0, 0] = False
    np.testing.assert_allclose(rgba[finite], np.broadcast_to(matplotlib.colormaps["bwr"](1.0),
                                                             (finite.sum(), 4)))
    np.testing.assert_allclose(rgba[0, 0], matplotlib.colors.to_rgba(BAD))
    plt.close(fig)


def test_unsigned_maps_are_magnitudes_over_the_largest_finite_one():
    a = np.linspace(-2.0, 1.0, 64).reshape(8, 8, 1)
    a[3, 5, 0] = np.nan
    fig, ax = plt.subplots()
    with pytest.warns(RuntimeWarning, match="1 of 64"):
        show_map(ax, a, signed=False)
    rgba = _rgba(ax)
    finite = np.isfinite(a[..., 0])
    expected = matplotlib.colormaps["hot"](np.abs(a[..., 0][finite]) / 2.0)
    np.testing.assert_allclose(rgba[finite], expected)
    np.testing.assert_allclose(rgba[3, 5], matplotlib.colors.to_rgba(BAD))
    plt.close(fig)


def test_signed_bars_have_a_zero_line_and_a_grey_band_for_a_nan():
    a = np.linspace(-1.0, 1.0, 9)
    a[4] = np.nan
    fig, (signed, unsigned) = plt.subplots(1, 2)
    with pytest.warns(RuntimeWarning, match="1 of 9"):
        show_map(signed, a)
    with pytest.warns(RuntimeWarning, match="1 of 9"):
        show_map(unsigned, a, signed=False)
    def zero_lines(ax):
        return [l for l in ax.lines if np.all(np.asarray(l.get_ydata()) == 0)]

    assert len(zero_lines(signed)) == 1 and not zero_lines(unsigned)
    grey = matplotlib.colors.to_rgba(BAD)
    for ax, expected in ((signed, a), (unsigned, np.abs(a))):
        bars = [p for p in ax.patches if p.get_facecolor() != grey]
        bands = [p for p in ax.patches if p.get_facecolor() == grey]
        heights = np.array([b.get_height() for b in bars])
        finite = np.isfinite(expected)
        np.testing.assert_allclose(heights[finite], expected[finite])
        assert len(bands) == 1 and bands[0].get_x() == pytest.approx(3.5)
        assert np.all(np.isfinite(ax.get_ylim()))
    plt.close(fig)


def test_sequence_lines_name_their_channels():
    fig, (three, one) = plt.subplots(1, 2)
    show_input(three, np.arange(30.0).reshape(10, 3))
    show_input(one, np.arange(10.0).reshape(10, 1))
    assert [t.get_text() for t in three.get_legend().get_texts()] == ["ch 0", "ch 1", "ch 2"]
    assert one.get_legend() is None  # one line needs no key
    plt.close(fig)


def test_attribution_captions_say_each_panel_has_its_own_scale():
    from jaxplain.attribution._demo import map_caption

    for shape in [(8, 8, 3), (16, 2), (16, 1), (20,)]:
        caption = map_caption(shape)
        assert "its own largest absolute value" in caption and "centred at zero" in caption
