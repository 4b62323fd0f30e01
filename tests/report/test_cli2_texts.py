"""The report's texts give the numbers used; --seed is checked against the 32 bits JAX keeps."""

import re

import jax.numpy as jnp
import numpy as np
import pytest
from click.testing import CliRunner

from jaxplain.cli import main

M = "tests.report.test_cli2_texts"

W = jnp.linspace(-1.0, 1.0, 64 * 3).reshape(64, 3)


def flat_model(x):
    """(n, ...) with 64 values per example -> (n, 3): a ReLU, then a dense head."""
    return jnp.maximum(x.reshape(x.shape[0], -1), 0.5) @ W


def _explain(tmp_path, x, *args):
    path = tmp_path / "data.npz"
    np.savez(path, x=x)
    return CliRunner().invoke(main, [
        "explain", f"{M}:flat_model", "--data", str(path), "--quick", "--no-compile-cache",
        "--out", str(tmp_path / "out"), *args])


def test_deeplift_shap_names_the_baselines_it_used(tmp_path):
    x = np.random.default_rng(0).random((5, 8, 8, 1), "float32")
    result = _explain(tmp_path, x, "--only", "attribution")
    used = re.search(r"DeepLIFT-SHAP .* over its (\d+) training baselines", result.output)
    assert used is not None, result.output
    assert int(used.group(1)) == len(x)   # 5 in the set (the text said 8)


def test_the_visualize_note_gives_the_shape_of_the_data(tmp_path):
    x = np.random.default_rng(0).random((120, 64), "float32")
    result = _explain(tmp_path, x, "--only", "visualize")
    assert result.exit_code == 0, result.output
    note = result.output[result.output.index("Feature visualization"):]
    assert f"shaped {x.shape}" in note and "(100, 64)" not in note


@pytest.mark.parametrize("seed", ["-1", str(2**32), str(2**64)])
def test_a_seed_outside_32_bits_is_a_usage_error(seed, tmp_path):
    x = np.random.default_rng(0).random((4, 64), "float32")
    result = _explain(tmp_path, x, "--seed", seed, "--only", "foundation")
    assert result.exit_code == 2 and "--seed" in result.output, result.output
