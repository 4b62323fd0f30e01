"""``jaxplain explain``: the report of the demo for a user's model and data."""

import re

import flax.serialization
import jax
import numpy as np
import pytest
from click.testing import CliRunner

from jaxplain.cli import main
from jaxplain.report import _demo_sections, section_name
from jaxplain.report._user import channels_last, load_data, load_model
from tests.report import _user_models


@pytest.fixture
def images(tmp_path):
    """60 random 8x8 RGB images with labels of 3 classes, as an .npz."""
    rng = np.random.default_rng(0)
    path = tmp_path / "images.npz"
    np.savez(path, x=rng.uniform(size=(60, 8, 8, 3)).astype(np.float32),
             y=rng.integers(0, 3, 60))
    return path


def _run(args):
    return CliRunner().invoke(main, ["explain", *args], catch_exceptions=False)


def test_explain_quick_writes_every_section_for_a_linen_factory(images, tmp_path):
    out = tmp_path / "report"
    result = _run(["tests.report._user_models:cnn", "--data", str(images), "--quick",
                   "--out", str(out)])
    assert result.exit_code == 0, result.output
    model, variables, f = load_model("tests.report._user_models:cnn")
    predicted = np.argmax(np.asarray(f(np.load(images)["x"])), -1)
    accuracy = np.mean(predicted == np.load(images)["y"])
    assert f"Test accuracy: {accuracy:.2%}" in result.output
    html = (out / "index.html").read_text()
    specs = _demo_sections.SECTIONS
    assert html.count("<section ") == len(specs) and 'class="failed"' not in html
    for i, spec in enumerate(specs, 1):
        assert f"[{i}/{len(specs)}] {section_name(spec)}" in result.output
    assert "test examples" in html and "grad-cam conv2" in html and "occlusion 2x2" in html
    # wording of the user's own report, and no progress bars in output that is not a terminal
    assert "demo machine" not in html and "test digit" not in html
    assert "on the machine that ran the report" in html
    assert "%|" not in result.output and "step/s" not in result.output
    assert "Rules X -&gt; Y from site &#x27;relu_1&#x27; (one item per filter" in html
    for src in re.findall(r'src="([^"]+)"', html):
        assert (out / src).stat().st_size > 0


def test_explain_an_equinox_model_on_vectors_without_labels(tmp_path):
    data = tmp_path / "vectors.npz"
    np.savez(data, x=np.random.default_rng(1).normal(size=(30, 12)).astype(np.float32))
    result = _run(["tests.report._user_models:mlp", "--data", str(data), "--quick",
                   "--only", "attribution,rules,pathways,visualize", "--out", str(tmp_path / "r")])
    # feature visualization (images only) failed with a traceback, so every such run exited 1
    assert result.exit_code == 0, result.output
    assert "the model's predictions stand in for them" in result.output
    html = (tmp_path / "r" / "index.html").read_text()
    assert html.count("<section ") == 4 and 'class="failed"' not in html
    assert "Traceback" not in result.output
    assert ("Feature visualization renders images (4-d batches, NHWC or NCHW); the inputs are "
            "shaped (30, 12), so it does not apply to these examples") in result.output
    assert "occlusion 1" in html and "grad-cam" not in html  # vectors: no spatial site
    # the attribution text and caption speak of examples and features, not images and channels
    assert "sums to about 1 for each of the examples" in html and "per image" not in html
    assert "feature index under the bars" in html and "over channels" not in html
    assert "from site &#x27;relu&#x27; (one item per unit" in html


def test_explain_restores_a_checkpoint(images, tmp_path):
    model, variables = _user_models.cnn()
    scaled = jax.tree_util.tree_map(lambda v: 2.0 * v, variables)
    ckpt = tmp_path / "weights.msgpack"
    ckpt.write_bytes(flax.serialization.to_bytes(scaled))
    _, restored, f = load_model("tests.report._user_models:cnn_from", ckpt)
    np.testing.assert_array_equal(restored["params"]["head"]["kernel"],
                                  scaled["params"]["head"]["kernel"])
    result = _run(["tests.report._user_models:cnn_from", "--checkpoint", str(ckpt), "--data",
                   str(images), "--quick", "--only", "foundation", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("spec, message", [
    ("no_colon", "must look like 'package.module:name'"),
    ("tests.report.nowhere:cnn", "cannot import 'tests.report.nowhere'"),
    ("tests.report._user_models:absent", "has no attribute 'absent'"),
])
def test_bad_model_specs_are_usage_errors(spec, message, images):
    result = _run([spec, "--data", str(images)])
    assert result.exit_code == 2 and message in result.output


def test_bad_data_is_refused(tmp_path):
    _, _, f = load_model("tests.report._user_models:cnn")
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="expected an array 'x'"):
        load_data(bad, f)
    np.savez(bad, x=np.zeros((4, 8, 8, 3), np.float32), y=np.zeros(3, int))
    with pytest.raises(ValueError, match=r"y must be int labels shaped \(4,\)"):
        load_data(bad, f)
    np.savez(bad, x=np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="at least two examples"):
        load_data(bad, f)
    np.savez(bad, x=np.zeros((4, 8, 8, 3), np.float32))
    _, _, g = load_model("tests.report._user_models:logits_of_wrong_rank")
    with pytest.raises(ValueError, match=r"logits \(n, classes\)"):
        load_data(bad, g)


def test_a_factory_may_return_a_plain_function(images):
    x = np.load(images)["x"][:5]
    _, variables, f = load_model("tests.report._user_models:cnn_as_function")
    _, _, g = load_model("tests.report._user_models:cnn")
    assert variables is None
    np.testing.assert_array_equal(f(x), g(x))


def test_explain_a_channels_first_equinox_cnn(tmp_path):
    """NCHW images for an Equinox CNN: the report runs on the model as a function of NHWC
    images (the same logits), so its heatmaps and renderings are drawn the right way round."""
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(40, 3, 8, 8)).astype(np.float32)
    data = tmp_path / "nchw.npz"
    np.savez(data, x=x, y=rng.integers(0, 4, 40))
    model, variables, f = load_model("tests.report._user_models:nchw_cnn")
    loaded, _ = load_data(data, f)
    g, moved, was_moved = channels_last(f, loaded)
    assert was_moved and moved.x_test.shape == (40, 8, 8, 3)
    np.testing.assert_allclose(g(moved.x_test), f(x), rtol=1e-5, atol=1e-6)
    assert channels_last(g, moved)[2] is False  # NHWC already: unchanged
    result = _run(["tests.report._user_models:nchw_cnn", "--data", str(data), "--quick",
                   "--only", "attribution,visualize", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "channels first" in result.output
    html = (tmp_path / "r" / "index.html").read_text()
    assert html.count("<section ") == 2 and 'class="failed"' not in html
    assert "grad-cam conv2" in html


def test_integer_images_are_refused_not_cast(tmp_path):
    # A cast alone explained a model trained on [0, 1] on inputs of 0..255, with exit status 0.
    _, _, f = load_model("tests.report._user_models:cnn")
    rng = np.random.default_rng(3)
    data = tmp_path / "u8.npz"
    np.savez(data, x=rng.integers(0, 256, (12, 8, 8, 3)).astype(np.uint8),
             y=rng.integers(0, 3, 12))
    with pytest.raises(ValueError, match=r"x has integer dtype uint8 \(values 0 to 25\d\)"):
        load_data(data, f)
    np.savez(data, x_train=np.zeros((4, 8, 8, 3), np.float32),
             x_test=np.ones((4, 8, 8, 3), np.int32))
    with pytest.raises(ValueError, match="x_test has integer dtype int32"):
        load_data(data, f)
    result = CliRunner().invoke(main, ["explain", "tests.report._user_models:cnn", "--data",
                                       str(data), "--quick", "--only", "foundation", "--out",
                                       str(tmp_path / "r")])
    assert result.exit_code == 2 and "x.astype('float32') / 255" in result.output
    assert not (tmp_path / "r").exists()


def test_labels_outside_the_models_classes_are_refused(images, tmp_path):
    # Labels 10..12 for a 4-logit model gave "test accuracy 0.00%" and exit status 0.
    _, _, f = load_model("tests.report._user_models:cnn")
    x = np.load(images)["x"]
    data = tmp_path / "labels.npz"
    np.savez(data, x=x, y=np.arange(len(x)) % 3 + 10)
    with pytest.raises(ValueError, match=r"y must be int labels in \[0, 4\) \(the model has 4 "
                                         r"logits\); got values 10 to 12"):
        load_data(data, f)
    np.savez(data, x_train=x, y_train=np.zeros(len(x), int), x_test=x[:5],
             y_test=np.array([0, 1, 2, 3, -1]))
    with pytest.raises(ValueError, match=r"y_test must be int labels in \[0, 4\).* -1 to 3"):
        load_data(data, f)
    result = _run(["tests.report._user_models:cnn", "--data", str(data), "--quick", "--only",
                   "foundation", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "int labels in [0, 4)" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_inputs_are_refused(value, tmp_path):
    # All-NaN x ran through, with the model's (NaN) predictions as labels, and exit status 0.
    _, _, f = load_model("tests.report._user_models:cnn")
    x = np.random.default_rng(4).uniform(size=(12, 8, 8, 3)).astype(np.float32)
    x[3, 1, 2, 0] = value
    data = tmp_path / "x.npz"
    np.savez(data, x=x)
    with pytest.raises(ValueError, match=r"x has 1 non-finite values \(NaN or inf\) out of 2304"):
        load_data(data, f)
    np.savez(data, x_train=x[5:], x_test=x)
    with pytest.raises(ValueError, match="x_test has 1 non-finite"):
        load_data(data, f)
    result = _run(["tests.report._user_models:cnn", "--data", str(data), "--quick", "--only",
                   "foundation", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "finite inputs only" in result.output
    assert not (tmp_path / "r").exists()


def test_data_the_model_cannot_take_is_a_clean_usage_error(tmp_path):
    # 6x6 images for an 8x8 CNN: a raw Flax ScopeParamShapeError traceback, exit status 1.
    data = tmp_path / "small.npz"
    np.savez(data, x=np.zeros((10, 6, 6, 3), np.float32))
    result = _run(["tests.report._user_models:cnn", "--data", str(data), "--quick", "--only",
                   "foundation", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert ("calling tests.report._user_models:cnn on x of shape (10, 6, 6, 3) (its first 2 "
            "examples) failed: ScopeParamShapeError") in result.output
    assert "pass --checkpoint" not in result.output  # cnn is a factory: no checkpoint hint
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


def test_a_checkpoint_factory_without_checkpoint_says_to_pass_it(images, tmp_path):
    # cnn_from(path) was called as the model, with x as the path: a traceback in user code.
    result = _run(["tests.report._user_models:cnn_from", "--data", str(images), "--quick",
                   "--only", "foundation", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "calling tests.report._user_models:cnn_from on x of shape (60, 8, 8, 3)" in result.output
    assert "failed: TypeError" in result.output
    assert ("if tests.report._user_models:cnn_from builds or restores a model from a "
            "checkpoint, pass --checkpoint PATH") in result.output
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


def test_a_model_that_fails_with_its_checkpoint_gets_no_checkpoint_hint(tmp_path):
    model, variables = _user_models.cnn()
    ckpt = tmp_path / "weights.msgpack"
    ckpt.write_bytes(flax.serialization.to_bytes(variables))
    data = tmp_path / "small.npz"
    np.savez(data, x=np.zeros((10, 6, 6, 3), np.float32))
    result = _run(["tests.report._user_models:cnn_from", "--checkpoint", str(ckpt), "--data",
                   str(data), "--quick", "--only", "foundation", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "ScopeParamShapeError" in result.output
    assert "pass --checkpoint" not in result.output


#: A Linen module without its variables (for the test below; MODEL may name it).
bare_linen = _user_models.SmallCNN()


@pytest.mark.parametrize("spec, what", [
    ("tests.report._user_models:SmallCNN", "the Flax Linen Module class SmallCNN"),
    (f"{__name__}:bare_linen", "a Flax Linen SmallCNN module without its variables"),
])
def test_a_bare_linen_module_says_how_to_wrap_it(spec, what, images, tmp_path):
    # MODEL naming the class called the class with x: "__init__() takes 1 positional argument".
    with pytest.raises(ValueError, match=what):
        load_model(spec)
    result = _run([spec, "--data", str(images), "--quick", "--only", "foundation", "--out",
                   str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert what in result.output and "jaxplain.as_function(module, variables)" in result.output
    assert not (tmp_path / "r").exists()


def test_getting_started_model_module_saves_what_it_restores(tmp_path):
    # The guide's mymodel.py restored weights.msgpack but never showed how to write it.
    import pathlib

    guide = pathlib.Path(__file__).resolve().parents[2] / "docs" / "getting_started.md"
    block = re.findall(r"```python\n(.*?)```", guide.read_text(), flags=re.S)[0]
    namespace: dict = {}
    exec(compile(block, "getting_started.md", "exec"), namespace)  # noqa: S102
    model = namespace["CNN"]()
    variables = model.init(jax.random.key(7), np.zeros((1, 32, 32, 3), np.float32))
    path = tmp_path / "weights.msgpack"
    namespace["save"](variables, str(path))
    restored_model, restored = namespace["restore"](str(path))
    assert type(restored_model) is type(model)
    jax.tree_util.tree_map(np.testing.assert_array_equal, restored, variables)


def test_sites_lists_a_user_models_sites(images):
    import jaxplain as jp

    result = CliRunner().invoke(main, ["sites", "tests.report._user_models:cnn", "--data",
                                       str(images)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split() == ["site", "kind", "op", "shape"]
    _, _, f = load_model("tests.report._user_models:cnn")
    x = np.load(images)["x"][:2]
    want = [(s.name, "x".join(map(str, s.shape[1:]))) for s in jp.sites(f, x)]
    assert [(line.split()[0], line.split()[-1]) for line in lines[1:]] == want
    missing = CliRunner().invoke(main, ["sites", "tests.report._user_models:cnn"])
    assert missing.exit_code == 2 and "needs --data" in missing.output
    stray = CliRunner().invoke(main, ["sites", "--data", str(images)])
    assert stray.exit_code == 2 and "MODEL of your own" in stray.output
