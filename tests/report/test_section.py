"""Section values: immutability, table cells, rendered figures."""

import dataclasses

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxplain.report import Figure, Section, Table  # noqa: E402


def _figure():
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    return fig


def test_with_methods_return_new_sections_and_leave_the_original():
    base = Section("Base", text="first")
    texted = base.with_text("second")
    tabled = texted.with_table(["a", "b"], [[1, 2]])
    figured = tabled.with_figure(_figure(), caption="cap")
    assert base == Section("Base", text="first") and base.items == ()
    assert texted.text == "first\n\nsecond" and texted.items == ()
    assert [type(i) for i in figured.items] == [Table, Figure] and len(tabled.items) == 1
    assert Section("Empty").with_text("only").text == "only"
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.title = "other"


def test_table_cells_become_plain_values():
    sec = Section("T").with_table(
        header=("name", "x", "y", "flag"),
        rows=[["a", np.float32(0.5), jnp.asarray(3), True],
              ("b", jnp.array([2.25]), np.int64(7), False)],
        caption="c",
    )
    table = sec.items[0]
    assert table.header == ("name", "x", "y", "flag") and table.caption == "c"
    assert table.rows == (("a", 0.5, 3, True), ("b", 2.25, 7, False))
    assert all(type(v) in (str, float, int, bool) for row in table.rows for v in row)
    assert type(table.rows[0][2]) is int and type(table.rows[1][1]) is float
    assert Section("T").with_table(["v"], [[np.arange(3)]]).items[0].rows == (("[0 1 2]",),)


def test_table_row_length_must_match_header():
    with pytest.raises(ValueError, match=r"rows\[1\] has 1 cells but header has 2"):
        Section("T").with_table(["a", "b"], [[1, 2], [3]])


def test_with_figure_renders_png_and_closes_the_figure():
    fig = _figure()
    sec = Section("F").with_figure(fig, caption="line")
    assert sec.items[0].png[:8] == b"\x89PNG\r\n\x1a\n"
    assert sec.items[0].caption == "line"
    assert fig.number not in plt.get_fignums()
    image = plt.imread(__import__("io").BytesIO(sec.items[0].png), format="png")
    assert image.shape[0] > 50 and image.shape[1] > 50


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="matplotlib.figure.Figure"):
        Section("F").with_figure(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="title"):
        Section("  ")
    with pytest.raises(TypeError, match="text must be a str"):
        Section("T").with_text(3)
    with pytest.raises(TypeError, match="items"):
        Section("T", items=("not an item",))
