"""The sub-network's feature maps beyond images: a 1-D convolution draws each kept filter's map
as a line over the positions, an MLP the kept units of each dense site as bars named by unit."""

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

import jaxplain as jp
from jaxplain import subnet
from tests.subnet.test_equivalence import _subnetwork

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

KEY = jax.random.key(0)


def _sub(sites, kept, units=8):
    masks = {n: jnp.zeros(units, bool).at[jnp.asarray(kept[n], int)].set(True) for n in sites}
    scores = {n: jnp.where(masks[n], jnp.linspace(0.5, 2.0, units), 0.0) for n in sites}
    return _subnetwork(sites, units, masks=masks, scores=scores)


def _conv1d_net():
    w1 = jax.random.normal(KEY, (5, 2, 8))
    w2 = jax.random.normal(jax.random.fold_in(KEY, 1), (5, 8, 8))
    head = jax.random.normal(jax.random.fold_in(KEY, 2), (8, 3))
    dn = ("NWC", "WIO", "NWC")

    def f(x):  # (n, 16, 2) -> (n, 3)
        with jax.named_scope("conv1"):
            h = jax.lax.conv_general_dilated(x, w1, (1,), "SAME", dimension_numbers=dn)
        h = jax.nn.relu(h)
        with jax.named_scope("conv2"):
            h = jax.lax.conv_general_dilated(h, w2, (1,), "SAME", dimension_numbers=dn)
        return jax.nn.relu(h).max(axis=1) @ head

    return f


def test_feature_maps_of_a_1d_convolution_are_lines_over_the_positions():
    # the kept filters' maps were dropped: only the "input" column was drawn
    f = _conv1d_net()
    x = jax.random.normal(jax.random.fold_in(KEY, 3), (3, 16, 2))
    sub = _sub(("conv1", "conv2"), {"conv1": (1, 4), "conv2": (0, 6)})
    fig = subnet.plot_feature_maps(f, sub, x, max_images=2)
    axes = np.asarray(fig.axes).reshape(2, 5)
    _, values = jp.capture(subnet.apply(f, sub), ["conv1", "conv2"])(x[:2])
    columns = [("conv1", 4), ("conv1", 1), ("conv2", 6), ("conv2", 0)]  # by multiplier
    for r in range(2):
        assert len(axes[r, 0].lines) == 2  # the input: one line per channel
        np.testing.assert_array_equal(axes[r, 0].lines[0].get_ydata(), np.asarray(x[r, :, 0]))
        for j, (n, c) in enumerate(columns, start=1):
            (line,) = axes[r, j].lines
            np.testing.assert_allclose(line.get_ydata(), np.asarray(values[n][r, :, c]),
                                       rtol=1e-6)
    assert axes[0, 1].get_title().startswith("conv1 4")
    plt.close(fig)


def test_an_mlp_shows_the_kept_units_of_each_dense_site_as_named_bars():
    # matplotlib raised "TypeError: Invalid shape (20,) for image data"
    w1 = jax.random.normal(KEY, (20, 8))
    w2 = jax.random.normal(jax.random.fold_in(KEY, 1), (8, 8))
    head = jax.random.normal(jax.random.fold_in(KEY, 2), (8, 3))

    def f(x):
        with jax.named_scope("lin1"):
            h = x @ w1
        h = jax.nn.relu(h)
        with jax.named_scope("lin2"):
            h = h @ w2
        return jax.nn.relu(h) @ head

    x = jax.random.normal(jax.random.fold_in(KEY, 3), (4, 20))
    sub = _sub(("lin1", "lin2"), {"lin1": (0, 3, 5), "lin2": (2, 7)})
    fig = subnet.plot_feature_maps(f, sub, x, max_images=3)
    axes = np.asarray(fig.axes).reshape(3, 3)
    _, values = jp.capture(subnet.apply(f, sub), ["lin1", "lin2"])(x[:3])
    for r in range(3):
        assert [p.get_height() for p in axes[r, 0].patches] == list(np.asarray(x[r]))
        for j, (n, units) in enumerate([("lin1", [5, 3, 0]), ("lin2", [7, 2])], start=1):
            heights = [p.get_height() for p in axes[r, j].patches]
            np.testing.assert_allclose(heights, np.asarray(values[n][r, np.asarray(units)]),
                                       rtol=1e-6)
            assert [t.get_text() for t in axes[r, j].get_xticklabels()] == list(map(str, units))
    assert axes[0, 1].get_title() == "lin1\n3 of 3 kept"
    assert [t.get_text() for t in axes[0, 0].get_xticklabels()] == ["0", "5", "10", "14", "19"]
    plt.close(fig)


def _conv2d_net(channels):
    w = jax.random.normal(KEY, (3, 3, channels, 4))
    head = jax.random.normal(jax.random.fold_in(KEY, 1), (4, 3))

    def f(x):  # (n, 6, 6, channels) -> (n, 3)
        with jax.named_scope("conv"):
            h = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.relu(h).mean(axis=(1, 2)) @ head

    return f


def test_images_of_two_channels_and_rgb_out_of_range_are_drawn_as_the_report_draws_inputs():
    # 2 channels: "TypeError: Invalid shape (6, 6, 2) for image data"; RGB outside [0, 1]: clipped
    from jaxplain.report._display import show_input

    sub = _sub(("conv",), {"conv": (0, 2)}, units=4)
    for channels in (2, 3):
        x = 3.0 * jax.random.normal(jax.random.fold_in(KEY, channels), (2, 6, 6, channels))
        fig = subnet.plot_feature_maps(_conv2d_net(channels), sub, x)
        shown = np.asarray(fig.axes[0].images[0].get_array())
        ref_fig, ref_ax = plt.subplots()
        show_input(ref_ax, np.asarray(x[0]))
        np.testing.assert_allclose(shown, np.asarray(ref_ax.images[0].get_array()))
        assert shown.min() >= 0.0 and shown.max() <= 1.0 if channels == 3 else shown.ndim == 2
        plt.close(fig)
        plt.close(ref_fig)
