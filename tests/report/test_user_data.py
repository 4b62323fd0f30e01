"""``--data``: which keys of the .npz are read, labels the file lacks, files that are no .npz."""

import numpy as np
import pytest
from click.testing import CliRunner

from jaxplain.cli import main
from jaxplain.report._user import load_data, load_model

MLP = "tests.report._user_models:mlp"  # 12 features -> 3 classes


def _run(args):
    return CliRunner().invoke(main, ["explain", MLP, *args], catch_exceptions=False)


def _vectors(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 12)).astype(np.float32), rng.integers(0, 3, n)


def test_test_labels_are_used_without_training_labels(tmp_path):
    # {x_train, x_test, y_test}: y_test was dropped ("No labels in the data") for want of y_train
    _, _, f = load_model(MLP)
    (x, _), (xt, yt) = _vectors(30), _vectors(20, seed=1)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, x_test=xt, y_test=yt)
    data, predicted = load_data(path, f)
    assert predicted == ("training",)
    np.testing.assert_array_equal(data.y_test, yt)
    np.testing.assert_array_equal(data.y_train, np.argmax(np.asarray(f(x)), -1))
    result = _run(["--data", str(path), "--only", "foundation", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    accuracy = np.mean(np.argmax(np.asarray(f(xt)), -1) == yt)
    assert f"Test accuracy: {accuracy:.2%}" in result.output
    assert "the model's predictions stand in for the training labels" in result.output
    assert "d.npz (training labels: the model's predictions)" in result.output


def test_x_test_alone_is_both_sets_and_x_train_alone_is_refused(tmp_path):
    _, _, f = load_model(MLP)
    x, y = _vectors(20)
    path = tmp_path / "d.npz"
    np.savez(path, x_test=x, y_test=y)
    data, predicted = load_data(path, f)
    assert predicted == ()
    np.testing.assert_array_equal(data.x_train, data.x_test)
    np.testing.assert_array_equal(data.y_train, y)
    np.savez(path, x_train=x, y_train=y)
    with pytest.raises(ValueError, match="has 'x_train' but no 'x_test'"):
        load_data(path, f)


def test_shape_errors_name_the_key_in_the_file(tmp_path):
    # a file with 'x' holding one example was told "x_train must be ..."
    _, _, f = load_model(MLP)
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((1, 12), np.float32))
    with pytest.raises(ValueError, match=r"d.npz: x must be numeric, batch first, with at least "
                                         r"two examples; got float32 \(1, 12\)"):
        load_data(path, f)
    np.savez(path, x_test=np.zeros((4, 12), np.int32))
    with pytest.raises(ValueError, match="x_test has integer dtype"):
        load_data(path, f)


def test_one_x_is_said_to_be_both_the_training_and_the_test_set(tmp_path):
    x, y = _vectors(20)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    result = _run(["--data", str(path), "--only", "foundation", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "(20 examples, both the training and the test set, of shape (12,))" in result.output
    assert "(20 examples, both the training and the test set)" in result.output  # the section
    assert "20 training / 20 test" not in result.output


def _npy(path):
    with path.open("wb") as fh:
        np.save(fh, np.zeros((4, 12), np.float32))


@pytest.mark.parametrize("write, why", [
    (_npy, r"it holds a single ndarray\(4, 12\); save it with np.savez\(path, x=x\)"),
    (lambda path: path.write_text("not an npz"), "allow_pickle"),
])
def test_a_file_that_is_not_an_npz_is_a_usage_error(write, why, tmp_path):
    # an .npy was a TypeError traceback (exit 1); a text file asked for allow_pickle=
    path = tmp_path / "data.npz"
    write(path)
    result = _run(["--data", str(path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert f"{path}: not an .npz written by np.savez or np.savez_compressed" in result.output
    assert "Traceback" not in result.output
    _, _, f = load_model(MLP)
    with pytest.raises(ValueError, match=why):
        load_data(path, f)


def test_the_compile_cache_line_comes_after_validation(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((4, 12), np.float32))
    result = _run(["--data", str(path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "expected an array 'x'" in result.output
    assert "Compiled programs cached" not in result.output


def test_token_ids_are_told_to_save_the_embeddings_and_pixels_to_scale(tmp_path):
    # int32 ids (n, L) were told "x.astype('float32') / 255 ... for 8-bit images"
    _, _, f = load_model(MLP)
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(24, dtype=np.int32).reshape(4, 6) % 20)
    with pytest.raises(ValueError, match=r"token ids, explain a model of the embeddings instead: "
                                         r"save the embeddings, \(n, L, D\), as x") as ids:
        load_data(path, f)
    assert "255" not in str(ids.value)
    np.savez(path, x=np.zeros((4, 8, 8, 1), np.uint8))
    with pytest.raises(ValueError, match=r"astype\('float32'\) / 255") as pixels:
        load_data(path, f)
    assert "token ids" not in str(pixels.value)
    result = _run(["--data", str(path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "integer dtype uint8" in result.output
