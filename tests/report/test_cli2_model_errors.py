"""MODEL that is not a model, or not a JAX one: one-line usage errors naming MODEL (exit 2)."""

import numpy as np
import pytest
from click.testing import CliRunner

from jaxplain.cli import main

M = "tests.report.test_cli2_model_errors"

SCALE = 0.5  # a non-callable attribute


def restore(path):
    """A restore(path) that forgets to return the model."""
    np.load(path)


def numpy_model(x):
    """A NumPy model: runs on arrays, cannot be traced."""
    return np.asarray(x).reshape(len(x), -1) @ np.ones((64, 3))


@pytest.fixture
def images(tmp_path):
    path = tmp_path / "images.npz"
    np.savez(path, x=np.random.default_rng(0).random((6, 8, 8, 1)).astype(np.float32))
    return path


@pytest.mark.parametrize("args, said", [
    ([f"{M}:restore", "--checkpoint", "WEIGHTS"], "returned None, not a model (does it end "
                                                   "with 'return model'?)"),
    ([f"{M}:SCALE"], "is 0.5, not a model"),
    ([f"{M}:numpy_model"], "write it with jax.numpy"),
])
def test_a_model_that_cannot_be_used_is_a_usage_error(args, said, images, tmp_path):
    weights = tmp_path / "w.npy"
    np.save(weights, np.ones(3))
    args = [str(weights) if a == "WEIGHTS" else a for a in args]
    for command in (["explain", "--only", "foundation", "--no-compile-cache",
                     "--out", str(tmp_path / "out")], ["sites"]):
        result = CliRunner().invoke(main, [*command, *args, "--data", str(images)])
        assert result.exit_code == 2, result.output
        assert "Error:" in result.output and args[0] in result.output and said in result.output
