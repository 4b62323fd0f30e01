"""The chain diagram shows the kept units of each layer; the feature maps are the sub-network's
own values of the kept filters."""

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

import jaxplain as jp
from jaxplain import subnet
from tests.subnet import _nets
from tests.subnet.test_equivalence import _subnetwork

matplotlib.use("Agg")

SITES = ("stem", "conv_a", "conv_b")
KEPT = {"stem": (1, 4, 6), "conv_a": (), "conv_b": (0, 2, 3, 5, 7)}


def _sub():
    masks = {n: jnp.zeros(8, bool).at[jnp.asarray(KEPT[n], int)].set(True) for n in SITES}
    scores = {n: jnp.where(masks[n], jnp.linspace(0.5, 2.0, 8), 0.0) for n in SITES}
    return _subnetwork(SITES, 8, masks=masks, scores=scores)


def test_chain_diagram_has_one_node_per_kept_unit():
    fig = subnet.plot_chain(_sub(), max_units=4)
    ax = fig.axes[0]
    nodes = [c for c in ax.collections if len(c.get_offsets()) == 1]
    assert len(nodes) == 3 + 0 + 4  # conv_b shows its 4 largest of 5
    texts = [t.get_text() for t in ax.texts]
    assert "stem\n3/8 kept" in texts and "conv_b\n5/8 kept (+1 more)" in texts
    assert "removed" in texts  # conv_a has no kept unit
    # conv_b's shown units are its largest multipliers: 7, 5, 3, 2 (scores grow with the index)
    shown = {t.get_text() for t in ax.texts if t.get_position()[0] == 2 and t.get_text().isdigit()}
    assert shown == {"7", "5", "3", "2"}
    matplotlib.pyplot.close(fig)


def _edges(ax):
    """The chain's edges as (from column, to column) pairs (nodes are scatter collections)."""
    return [tuple(np.asarray(line.get_xdata())) for line in ax.lines]


def test_chain_diagram_says_its_edges_are_schematic():
    # It joins every kept unit of a layer to every kept unit of the next (3 x 2 + 2 x 4 edges
    # here), also where the model has no such weight (a depthwise convolution's 24 -> 13).
    kept = {**KEPT, "conv_a": (0, 5)}
    masks = {n: jnp.zeros(8, bool).at[jnp.asarray(kept[n], int)].set(True) for n in SITES}
    scores = {n: jnp.where(masks[n], jnp.linspace(0.5, 2.0, 8), 0.0) for n in SITES}
    fig = subnet.plot_chain(_subnetwork(SITES, 8, masks=masks, scores=scores), max_units=4)
    ax = fig.axes[0]
    assert sorted(_edges(ax)) == [(0, 1)] * (3 * 2) + [(1, 2)] * (2 * 4)
    assert any("edges are schematic" in t.get_text() for t in ax.texts)
    matplotlib.pyplot.close(fig)


def test_no_chain_edge_crosses_a_removed_layer():
    fig = subnet.plot_chain(_sub(), max_units=4)  # conv_a, between stem and conv_b, is removed
    assert _edges(fig.axes[0]) == []
    matplotlib.pyplot.close(fig)
    sites = ("a", "b", "c", "d")
    kept = {"a": (0, 1), "b": (), "c": (2, 3, 4), "d": (5,)}
    masks = {n: jnp.zeros(8, bool).at[jnp.asarray(kept[n], int)].set(True) for n in sites}
    fig = subnet.plot_chain(_subnetwork(sites, 8, masks=masks), max_units=4)
    assert sorted(_edges(fig.axes[0])) == [(2, 3)] * 3  # only c -> d; a stops at the gap
    matplotlib.pyplot.close(fig)


def test_feature_maps_are_the_subnetworks_values_of_kept_filters():
    f = _nets.residual_net(_nets.residual_params())
    x, _ = _nets.region(per_class=2)
    sub = _sub()
    fig = subnet.plot_feature_maps(f, sub, x, max_images=3, max_units=6)
    axes = np.asarray(fig.axes).reshape(3, 7)
    _, values = jp.capture(subnet.apply(f, sub), ["stem", "conv_b"])(x[:3])
    # Columns after the input: stem's kept filters by multiplier (6, 4, 1), then conv_b's (7, 5, 3).
    columns = [("stem", 6), ("stem", 4), ("stem", 1), ("conv_b", 7), ("conv_b", 5), ("conv_b", 3)]
    for r in range(3):
        for j, (n, c) in enumerate(columns, start=1):
            shown = axes[r, j].get_images()[0].get_array()
            np.testing.assert_allclose(np.asarray(shown), np.asarray(values[n][r, ..., c]),
                                       rtol=1e-6)
    matplotlib.pyplot.close(fig)


def test_feature_maps_of_a_channels_first_model_draw_its_nchw_images():
    f = _nets.residual_net(_nets.residual_params())
    nchw = lambda x: f(jnp.moveaxis(x, 1, -1))  # noqa: E731 -- the same net reading NCHW images
    x, _ = _nets.region(per_class=2)
    xc = jnp.moveaxis(x, -1, 1)
    sub = _sub()
    fig = subnet.plot_feature_maps(nchw, sub, xc, max_images=2, max_units=2)
    axes = np.asarray(fig.axes).reshape(2, 3)
    _, values = jp.capture(subnet.apply(f, sub), ["stem"])(x[:2])
    for r in range(2):
        np.testing.assert_allclose(np.asarray(axes[r, 0].get_images()[0].get_array()),
                                   np.asarray(x[r, ..., 0]))
        np.testing.assert_allclose(np.asarray(axes[r, 1].get_images()[0].get_array()),
                                   np.asarray(values["stem"][r, ..., 6]), rtol=1e-6)
    matplotlib.pyplot.close(fig)
    rgb = jnp.tile(xc[:2], (1, 3, 1, 1))                     # (2, 3, 8, 8), as the user's report
    w = jnp.ones((1, 3, 1, 1)) / 3                           # OIHW: the mean of RGB
    grey = lambda z: nchw(jax.lax.conv_general_dilated(z, w, (1, 1), "SAME"))  # noqa: E731
    fig = subnet.plot_feature_maps(grey, sub, rgb, max_units=2)
    assert fig.axes[0].get_images()[0].get_array().shape == (8, 8, 3)
    matplotlib.pyplot.close(fig)


def test_every_kept_dense_site_keeps_its_column_when_filters_fill_the_figure():
    from jaxplain.subnet._plot import _within
    # 9 kept filters of two conv sites, then a dense site: at 10 columns the dense site's bars
    # used to be cut off whenever the filters reached the limit (the report's Linen CNN).
    columns = ([("conv1", c) for c in range(5)] + [("conv2", c) for c in range(6)]
               + [("fc", np.arange(9))])
    kept = _within(columns, 10)
    assert len(kept) == 10 and kept[-1][0] == "fc"
    assert kept[:9] == columns[:9]                      # the filters in order, 9 of 11
    assert _within(columns[:5] + columns[-1:], 10) == columns[:5] + columns[-1:]
