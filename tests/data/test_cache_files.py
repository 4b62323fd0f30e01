"""The model cache on disk: an unwritable cache folder, leftovers of a killed save, and the
warning about a damaged checkpoint. The training is faked (untrained variables), as in
test_cache_sharing."""

import errno
import pathlib
import warnings

import jax
import pytest

from jaxplain import data
from jaxplain.data import _pretrained
from tests.data.test_cache_sharing import fake_train

NAME = _pretrained.CHECKPOINT_NAME


def _expected():
    """The checksum of what `fake_train` returns: the untrained default model."""
    model = data.DigitsCNN()
    return data.params_checksum(model.init(jax.random.key(_pretrained.TRAIN_SEED),
                                           data.load_digits().x_test[:1]))


@pytest.fixture
def faked(monkeypatch):
    """Training replaced by `fake_train`, counting its calls."""
    calls = []

    def train(*args, **kwargs):
        calls.append(kwargs)
        return fake_train(*args, **kwargs)

    monkeypatch.setattr(_pretrained, "train", train)
    return calls


def _read_only(monkeypatch, home):
    """Folders cannot be made in `home`, as in a read-only one (root ignores permission bits)."""
    mkdir = pathlib.Path.mkdir

    def refuse(self, *args, **kwargs):
        if self.parent == home and not self.exists():
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", refuse)


def test_home_that_is_a_file_returns_the_trained_model_with_a_warning(tmp_path, faked):
    home = tmp_path / "home"
    home.write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="cannot be saved") as record:
        _, variables = data.pretrained(home, progress=False)
    assert len(faked) == 1 and data.params_checksum(variables) == _expected()
    message = str(record[0].message)
    assert str(home) in message and "JAXPLAIN_HOME" in message
    assert home.read_text() == "not a folder"


def test_read_only_home_with_a_damaged_model_retrains_and_warns(tmp_path, faked, monkeypatch):
    data.pretrained(tmp_path, progress=False)                 # a valid cache, then damaged
    (tmp_path / NAME / "metadata.json").write_text("{")
    _read_only(monkeypatch, tmp_path)
    with pytest.warns(RuntimeWarning) as record:
        _, variables = data.pretrained(tmp_path, progress=False)
    assert len(faked) == 2 and data.params_checksum(variables) == _expected()
    messages = [str(w.message) for w in record]
    assert any("unusable" in m for m in messages)
    assert any("cannot be saved" in m and str(tmp_path) in m for m in messages)
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]   # nothing left behind


def test_read_only_home_with_a_valid_model_loads_it(tmp_path, faked, monkeypatch):
    data.pretrained(tmp_path, progress=False)
    _read_only(monkeypatch, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, variables = data.pretrained(tmp_path, progress=False)
    assert len(faked) == 1 and data.params_checksum(variables) == _expected()


def test_leftovers_of_a_killed_save_are_removed_by_the_next_save(tmp_path, faked):
    for leftover in (f".{NAME}.0123abcd.partial", f".{NAME}.x1y2.old"):
        (tmp_path / leftover / "variables").mkdir(parents=True)   # as a SIGKILL leaves them
        (tmp_path / leftover / "metadata.json").write_text("{")
    (tmp_path / "notes.txt").write_text("kept")
    _, variables = data.pretrained(tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME, "notes.txt"]
    assert data.checkpoint_info(tmp_path).checksum == data.params_checksum(variables)


# Orbax's failed read of truncated data leaves a tensorstore callback that fires after its
# event loop closed ("Event loop is closed", raised and ignored inside orbax at collection).
@pytest.mark.filterwarnings("ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")
def test_damaged_model_warning_is_one_short_line_naming_the_path(tmp_path, faked):
    data.pretrained(tmp_path, progress=False)
    for path in (tmp_path / NAME / "variables").glob("**/d/*"):   # every data file cut short
        path.write_bytes(path.read_bytes()[:20])
    with pytest.warns(RuntimeWarning, match="unusable") as record:
        data.pretrained(tmp_path, progress=False)
    message = str(record[0].message)
    assert str(tmp_path / NAME) in message and "orbax cannot restore" in message
    assert "\n" not in message and "tensorstore_spec" not in message
    assert len(message) < 800     # the cause's first line, not a kilobyte of tensorstore spec
