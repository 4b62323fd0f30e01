"""The pretrained default model: accuracy, the orbax cache, and damaged checkpoints."""

import json
import shutil
import warnings

import jax
import numpy as np
import pytest

from jaxplain import data
from jaxplain.data import _pretrained


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))) and (
        jax.tree.structure(a) == jax.tree.structure(b)
    )


def test_accuracy_at_least_97_percent(digits_model, jaxplain_home):
    _, _, f, digits = digits_model
    acc = data.accuracy(f, digits.x_test, digits.y_test)
    assert acc >= 0.97
    info = data.checkpoint_info(jaxplain_home)
    assert info.test_accuracy == pytest.approx(acc, abs=1e-6)
    assert info.history.test_accuracy[-1] == pytest.approx(acc, abs=1e-6)
    assert info.history.loss[-1] < info.history.loss[0]


def test_second_call_loads_the_same_parameters(digits_model, jaxplain_home, monkeypatch):
    _, variables, _, _ = digits_model
    meta = jaxplain_home / _pretrained.CHECKPOINT_NAME / "metadata.json"
    stamp = meta.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("a valid checkpoint must be loaded, not retrained")

    monkeypatch.setattr(_pretrained, "train", no_training)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, loaded = data.pretrained(jaxplain_home, progress=False)
    assert isinstance(model, data.DigitsCNN)
    assert _same(loaded, variables)
    assert meta.stat().st_mtime_ns == stamp
    assert data.checkpoint_info(jaxplain_home).checksum == data.params_checksum(loaded)


def test_home_follows_argument_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXPLAIN_HOME", str(tmp_path / "env"))
    assert data.home() == (tmp_path / "env").resolve()
    assert data.home(tmp_path / "arg") == (tmp_path / "arg").resolve()
    monkeypatch.delenv("JAXPLAIN_HOME")
    assert data.home().parts[-2:] == (".cache", "jaxplain")


def test_checksum_sees_every_value_and_path(digits_model):
    _, variables, _, _ = digits_model
    base = data.params_checksum(variables)
    assert data.params_checksum(jax.tree.map(np.array, variables)) == base
    bumped = jax.tree.map(lambda a: a, variables)
    kernel = np.array(bumped["params"]["head"]["kernel"])
    kernel[3, 4] = np.nextafter(kernel[3, 4], np.float32(np.inf))
    bumped["params"]["head"]["kernel"] = kernel
    assert data.params_checksum(bumped) != base
    renamed = {"params": {("x" + k): v for k, v in variables["params"].items()}}
    assert data.params_checksum(renamed) != base


def _largest_file(folder):
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _truncate_data(ckpt):
    path = _largest_file(ckpt / "variables")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble_metadata(ckpt):
    (ckpt / "metadata.json").write_text('{"architecture": "DigitsCNN", "checks')


def _drop_metadata(ckpt):
    (ckpt / "metadata.json").unlink()


def _drop_variables(ckpt):
    shutil.rmtree(ckpt / "variables")


def _wrong_checksum(ckpt):
    meta = json.loads((ckpt / "metadata.json").read_text())
    meta["checksum"] = "0" * 64
    (ckpt / "metadata.json").write_text(json.dumps(meta))


def _old_architecture(ckpt):
    meta = json.loads((ckpt / "metadata.json").read_text())
    meta["architecture_version"] -= 1
    (ckpt / "metadata.json").write_text(json.dumps(meta))


def _other_parameters(ckpt):
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as c:
        restored = c.restore(ckpt / "variables")
    shutil.rmtree(ckpt / "variables")
    restored = jax.tree.map(lambda a: np.asarray(a) * 1.01, restored)
    with ocp.StandardCheckpointer() as c:
        c.save(ckpt / "variables", restored)


# Orbax's failed read of truncated data leaves a tensorstore callback that fires after its
# event loop closed ("Event loop is closed", raised and ignored inside orbax at collection).
@pytest.mark.filterwarnings("ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", [_truncate_data, _garble_metadata, _drop_metadata,
                                    _drop_variables, _wrong_checksum, _old_architecture,
                                    _other_parameters])
def test_damaged_checkpoint_is_retrained_not_loaded(damage, digits_model, jaxplain_home,
                                                    tmp_path, monkeypatch):
    _, variables, _, _ = digits_model
    ckpt = tmp_path / _pretrained.CHECKPOINT_NAME
    shutil.copytree(jaxplain_home / _pretrained.CHECKPOINT_NAME, ckpt)
    damage(ckpt)
    history = data.checkpoint_info(jaxplain_home).history
    calls = []

    def fake_train(key, digits, model, *, epochs, learning_rate, progress):  # the 10-epoch run
        assert (epochs, learning_rate) == (_pretrained.EPOCHS, _pretrained.LEARNING_RATE)
        calls.append(key)
        return jax.tree.map(np.array, variables), history

    monkeypatch.setattr(_pretrained, "train", fake_train)
    with pytest.warns(RuntimeWarning, match="unusable"):
        _, loaded = data.pretrained(tmp_path, progress=False)
    assert len(calls) == 1 and _same(loaded, variables)
    # The replacement is a whole, valid checkpoint: the next call loads it without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, again = data.pretrained(tmp_path, progress=False)
    assert len(calls) == 1 and _same(again, variables)
    assert sorted(p.name for p in tmp_path.iterdir()) == [_pretrained.CHECKPOINT_NAME]


def test_leftover_partial_write_is_ignored(digits_model, jaxplain_home, tmp_path, monkeypatch):
    _, variables, _, _ = digits_model
    name = _pretrained.CHECKPOINT_NAME
    shutil.copytree(jaxplain_home / name, tmp_path / name)
    partial = tmp_path / f".{_pretrained.CHECKPOINT_NAME}.abc123.partial"
    partial.mkdir()
    (partial / "metadata.json").write_text("{")
    monkeypatch.setattr(_pretrained, "train", None)  # loading must not train
    _, loaded = data.pretrained(tmp_path, progress=False)
    assert _same(loaded, variables)


def test_checkpoint_info_errors(tmp_path, jaxplain_home):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        data.checkpoint_info(tmp_path)
    ckpt = tmp_path / _pretrained.CHECKPOINT_NAME
    shutil.copytree(jaxplain_home / _pretrained.CHECKPOINT_NAME, ckpt)
    _garble_metadata(ckpt)
    with pytest.raises(ValueError, match="unusable"):
        data.checkpoint_info(tmp_path)


def test_digits_function_is_the_pretrained_classifier(digits_model, jaxplain_home):
    model, variables, _, digits = digits_model
    f = data.digits_function(jaxplain_home, progress=False)
    np.testing.assert_allclose(f(digits.x_test[:8]), model.apply(variables, digits.x_test[:8]),
                               rtol=1e-5, atol=1e-5)


def test_the_digits_vit_is_cached_accurate_and_conservative(digits_vit, jaxplain_home, monkeypatch):
    import jax.numpy as jnp

    from jaxplain.attribution import conservative_propagation

    _, variables, f = digits_vit
    digits = data.load_digits()
    acc = data.accuracy(f, digits.x_test, digits.y_test)
    assert acc >= 0.94
    info = data.checkpoint_info(jaxplain_home, architecture="vit")
    assert info.test_accuracy == pytest.approx(acc, abs=1e-6)
    assert info.path.name == f"digits_vit_v{data._vit.VIT_VERSION}"
    monkeypatch.setattr(_pretrained, "train", lambda *a, **k: pytest.fail("must load, not train"))
    model, loaded = data.pretrained(jaxplain_home, progress=False, architecture="vit")
    assert isinstance(model, data.DigitsViT) and _same(loaded, variables)
    # bias-free: conservative propagation sums to the logit of each test digit
    x = jnp.asarray(digits.x_test[:16])
    t = jnp.argmax(f(x), axis=-1)
    total = conservative_propagation(f, x, t).reshape(16, -1).sum(axis=1)
    np.testing.assert_allclose(total, np.asarray(f(x))[np.arange(16), np.asarray(t)], rtol=1e-4,
                               atol=1e-4)


def test_unknown_architecture_is_refused(tmp_path):
    with pytest.raises(ValueError, match="architecture must be one of"):
        data.pretrained(tmp_path, architecture="mlp")
