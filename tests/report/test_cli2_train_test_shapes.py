"""Training and test sets of different example shapes: a usage error naming both sets."""

import jax.numpy as jnp
import numpy as np
import pytest
from click.testing import CliRunner

from jaxplain.cli import main

M = "tests.report.test_cli2_train_test_shapes"

W = jnp.linspace(-1.0, 1.0, 64 * 3).reshape(64, 3)


def flat_model(x):
    """(n, 8, 8, 1) -> (n, 3) through a flatten: fails on 6x6 images."""
    return x.reshape(x.shape[0], -1) @ W


@pytest.mark.parametrize("labelled", [False, True])
def test_sets_of_different_shapes_are_a_usage_error(labelled, tmp_path):
    r = np.random.default_rng(0)
    arrays = {"x_train": r.random((12, 6, 6, 1), "float32"),
              "x_test": r.random((10, 8, 8, 1), "float32")}
    if labelled:
        arrays["y_train"] = r.integers(0, 3, 12)
    path = tmp_path / "sets.npz"
    np.savez(path, **arrays)
    result = CliRunner().invoke(main, [
        "explain", f"{M}:flat_model", "--data", str(path), "--quick", "--only", "foundation",
        "--no-compile-cache", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "x_train (12, 6, 6, 1)" in result.output and "x_test (10, 8, 8, 1)" in result.output


def test_predicting_missing_labels_is_wrapped_as_a_model_call_error(tmp_path):
    from jaxplain.report._user import ModelCallError, _predict

    def broken(x):
        raise RuntimeError("boom")

    with pytest.raises(ModelCallError, match="calling M on x of shape .*RuntimeError: boom"):
        _predict(broken, np.zeros((4, 3), np.float32), "M")
