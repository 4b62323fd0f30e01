"""What --checkpoint errors advise: the kind of MODEL only where the path reached the model;
Flax's "batch_stats is immutable" (a Linen model in training mode) gets the train=False fix."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from click.testing import CliRunner

import jaxplain
from jaxplain.cli import main

M = "tests.report.test_cli2_ckpt_hint"


class BatchNormCNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(4, (3, 3))(x)))
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def _variables():
    return BatchNormCNN().init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False)


def restore(path):
    """A loader that reads the file (a damaged one raises)."""
    np.load(path)
    return BatchNormCNN(), _variables()


def restore_train(path):
    """A loader that leaves the model in training mode."""
    return jaxplain.as_function(BatchNormCNN(), _variables(), train=True)


def flat_model(x):
    """A model, not a loader: given the path, ``str.reshape`` fails."""
    return x.reshape(x.shape[0], -1)[:, :3]


@pytest.fixture
def files(tmp_path):
    data, bad = tmp_path / "data.npz", tmp_path / "bad.npz"
    np.savez(data, x=np.random.default_rng(0).random((6, 8, 8, 1)).astype(np.float32))
    bad.write_bytes(b"PK\x03\x04garbage")
    return data, bad


def _explain(name, files, tmp_path):
    data, bad = files
    return CliRunner().invoke(main, [
        "explain", f"{M}:{name}", "--checkpoint", str(bad), "--data", str(data), "--only",
        "foundation", "--no-compile-cache", "--out", str(tmp_path / "out")])


def test_the_leave_checkpoint_out_advice_is_for_a_model_given_the_path(files, tmp_path):
    loader = _explain("restore", files, tmp_path)
    assert loader.exit_code == 2 and "failed" in loader.output, loader.output
    assert "leave --checkpoint out" not in loader.output
    model = _explain("flat_model", files, tmp_path)
    assert model.exit_code == 2 and "leave --checkpoint out" in model.output, model.output


def test_a_linen_model_in_training_mode_is_told_train_false(files, tmp_path):
    result = _explain("restore_train", files, tmp_path)
    assert result.exit_code == 2 and "immutable" in result.output, result.output
    assert result.output.count("as_function(model, variables, train=False)") == 1, result.output
    x = np.load(files[0])["x"]   # and the advice works
    assert jaxplain.as_function(BatchNormCNN(), _variables(), train=False)(x).shape == (6, 3)
