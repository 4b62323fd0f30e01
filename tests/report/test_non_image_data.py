"""``jaxplain explain`` and the report on data that are not images: vectors (tabular data) and
sequences ``(length, channels)``, and a Flax NNX model (a user trial's findings)."""

import pathlib
import re

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from click.testing import CliRunner

from jaxplain.cli import main
from jaxplain.report import DemoContext
from jaxplain.report._user import ReportData, load_data, load_model

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GUIDE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "getting_started.md"


def _run(args):
    return CliRunner().invoke(main, ["explain", *args], catch_exceptions=False)


@pytest.fixture
def vectors(tmp_path):
    path = tmp_path / "vectors.npz"
    np.savez(path, x=np.random.default_rng(1).normal(size=(30, 12)).astype(np.float32))
    return path


def test_label_errors_name_the_key_in_the_file(tmp_path):
    _, _, f = load_model("tests.report._user_models:mlp")  # 12 features -> 3 classes
    x = np.random.default_rng(0).normal(size=(20, 12)).astype(np.float32)
    y = np.arange(20) % 3
    path = tmp_path / "onehot.npz"
    np.savez(path, x=x, y=np.eye(3)[y])
    # named 'y_train', a key the file does not have, and one-hot labels were not recognised
    with pytest.raises(ValueError, match=r"onehot.npz: y must be int labels shaped \(20,\); got "
                                         r"float64 \(20, 3\) \(one-hot labels\? save "
                                         r"y.argmax\(-1\) instead\)"):
        load_data(path, f)
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y[:5])
    with pytest.raises(ValueError, match=r"y_test must be int labels shaped \(20,\); got int64 "
                                         r"\(5,\)\.$"):
        load_data(path, f)


@pytest.mark.parametrize("spec, what", [
    ("tests.report._user_models:NnxMLP", "the Flax NNX Module class NnxMLP"),
    ("tests.report._user_models:EquinoxCNN", "the Equinox Module class EquinoxCNN"),
])
def test_a_module_class_says_to_point_model_at_a_function_returning_an_instance(
        spec, what, vectors, tmp_path):
    # the class was called with x: "AttributeError ...; pass --checkpoint PATH"
    with pytest.raises(ValueError, match=what):
        load_model(spec)
    result = _run([spec, "--data", str(vectors), "--only", "foundation", "--no-compile-cache",
                   "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert what in result.output and "point MODEL at a function returning an instance" \
        in result.output
    assert "pass --checkpoint" not in result.output and "AttributeError" not in result.output


def _context(f, x, y, *, labelled=True):
    return DemoContext(model=f, variables=None, f=f, data=ReportData(x, y, x, y),
                       key=jax.random.key(0), quick=True, noun="examples", labelled=labelled)


def test_feature_visualization_of_sequences_is_a_note_not_a_failure():
    from jaxplain.visualize._demo import demo_section, spatial_layers

    w = jnp.ones((2, 3))
    f = lambda x: jax.nn.relu(x @ w).mean(axis=1)  # noqa: E731 - (n, 16, 2) -> (n, 3)
    x = np.zeros((6, 16, 2), np.float32)
    section = demo_section(_context(f, x, np.zeros(6, int)))
    assert not section.failed and not section.items
    assert section.text == ("Feature visualization renders images (4-d batches, NHWC or NCHW); "
                            "the inputs are shaped (6, 16, 2), so it does not apply to these "
                            "examples (one is shaped (16, 2)).")
    with pytest.raises(ValueError, match=r"renders images .* shaped \(6, 16, 2\)"):
        spatial_layers(f, x)


def _tick_labels(ax):
    return [t.get_text() for t in ax.get_xticklabels()]


def test_vector_bars_have_feature_index_ticks():
    from jaxplain.report._display import map_grid, show_input, show_map

    fig, (a, b) = plt.subplots(1, 2)
    show_input(a, np.arange(20.0))
    show_map(b, np.linspace(-1, 1, 20))
    assert _tick_labels(a) == _tick_labels(b) == ["0", "5", "10", "14", "19"]
    assert len(b.patches) == 20 and not b.get_yticks().size
    fig = map_grid(np.ones((2, 7)), {"m": np.ones((2, 7))}, np.zeros(2, int))
    for ax in fig.axes:  # map_grid no longer clears them
        assert _tick_labels(ax) == ["0", "2", "3", "4", "6"]
    plt.close("all")


def test_sequence_maps_are_channel_by_position_images_not_interleaved_bars():
    from jaxplain.report._display import show_input, show_map

    a = np.arange(32.0).reshape(16, 2)  # (length, channels)
    fig, (ax_in, ax_map, ax_one) = plt.subplots(1, 3)
    show_input(ax_in, a)
    show_map(ax_map, a)
    show_map(ax_one, a[:, :1])
    assert len(ax_in.lines) == 2  # one line per channel
    np.testing.assert_array_equal(ax_in.lines[1].get_ydata(), a[:, 1])
    assert not ax_map.patches  # not 32 interleaved bars
    np.testing.assert_array_equal(ax_map.get_images()[0].get_array(), a.T)
    assert _tick_labels(ax_map)[-1] == "15"  # positions under the map
    heights = [p.get_height() for p in ax_one.patches]  # one channel: bars over the positions
    np.testing.assert_array_equal(heights, a[:, 0])
    plt.close("all")


def test_attribution_caption_says_channels_only_for_images():
    from jaxplain.attribution._demo import map_caption

    assert map_caption((8, 8, 3)).startswith("Heatmaps summed over channels")
    for shape in [(20,), (16, 2), (16, 1)]:
        assert "channels (" not in map_caption(shape) and "summed" not in map_caption(shape)
    assert "one row per channel" in map_caption((16, 2))
    assert "feature index under the bars" in map_caption((20,))


def test_subnet_section_without_labels_reports_no_accuracy():
    from jaxplain.subnet._demo import demo_section

    w1 = jnp.asarray([[1.0, -1.0, 0.5, 0.0]] + [[0.1, 0.2, -0.1, 0.3]] * 5)
    w2 = jnp.asarray([[2.0, -2.0], [-2.0, 2.0], [0.1, 0.0], [0.0, 0.1]])

    def f(x):  # class by the sign of feature 0
        return jax.nn.relu(x @ w1) @ w2

    x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    y = np.argmax(np.asarray(f(x)), -1)
    assert np.bincount(y).min() >= 11
    section = demo_section(_context(f, x, y, labelled=False))
    # it said "2-class accuracy on them 100.0% (full net 100.0%)": the labels were the predictions
    assert "2-class accuracy n/a (no labels" in section.text
    assert "(full net" not in section.text and "accuracy on them" not in section.text
    figures = [i for i in section.items if hasattr(i, "png")]
    assert len(figures) == 2  # the chain and the kept units' values, also for vectors


def test_getting_started_nnx_module_saves_and_restores_its_weights(tmp_path):
    from flax import nnx

    block = next(b for b in re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
                 if "nnx.Module" in b)
    namespace: dict = {}
    exec(compile(block, "getting_started.md", "exec"), namespace)  # noqa: S102
    model = namespace["MLP"](nnx.Rngs(7))
    model.eval()
    with pytest.raises(TypeError, match="PRNGKey dtype"):  # why the guide saves WEIGHTS only
        jax.tree_util.tree_map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
    path = tmp_path / "mlp.msgpack"
    namespace["save"](model, str(path))
    restored = namespace["restore"](str(path))
    x = np.random.default_rng(0).normal(size=(5, 20)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(restored(x)), np.asarray(model(x)))
    fresh = namespace["MLP"](nnx.Rngs(0))
    fresh.eval()
    assert not np.allclose(np.asarray(fresh(x)), np.asarray(model(x)))
