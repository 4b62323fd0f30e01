"""MODEL that fails while loading or on the data: one-line usage errors that say what to try."""

import numpy as np
import pytest
from click.testing import CliRunner

import jaxplain
from jaxplain.cli import main
from tests.report import _user_models

M = "tests.report._user_models"


@pytest.fixture
def vectors(tmp_path):
    path = tmp_path / "vectors.npz"
    np.savez(path, x=np.random.default_rng(1).normal(size=(10, 12)).astype(np.float32))
    return path


def _sites(*args):
    return CliRunner().invoke(main, ["sites", *args], catch_exceptions=False)


def test_errors_of_the_factory_are_usage_errors_naming_model_and_checkpoint(vectors, tmp_path):
    # a plain f(x) called with the path, and a loader that raises: tracebacks, exit status 1
    ckpt = tmp_path / "weights.msgpack"
    ckpt.write_bytes(b"")
    for spec, error in ((f"{M}:vector_model", "TypeError"),
                        (f"{M}:broken_loader", f"RuntimeError: cannot read {ckpt}")):
        result = _sites(spec, "--checkpoint", str(ckpt), "--data", str(vectors))
        assert result.exit_code == 2, result.output
        assert (f"calling MODEL {spec} with the --checkpoint path '{ckpt}' failed: {error}"
                in result.output)
        assert "Traceback" not in result.output


def test_the_checkpoint_hint_is_only_for_a_model_function_of_one_argument(vectors):
    # every model-call error without --checkpoint said "pass --checkpoint PATH"
    one = _sites(f"{M}:cnn_from", "--data", str(vectors))  # a loader(path) called with x
    assert one.exit_code == 2 and "pass --checkpoint PATH" in one.output
    linen = _sites(f"{M}:train_flag_mlp", "--data", str(vectors))  # a factory: no hint
    assert linen.exit_code == 2 and "pass --checkpoint" not in linen.output
    assert ("missing 1 required positional argument: 'train'; TrainFlagMLP takes the call "
            "argument 'train': have MODEL return jaxplain.as_function(model, variables, "
            "train=False) to fix it") in linen.output
    model, variables = _user_models.train_flag_mlp()   # and the advice works
    x = np.load(vectors)["x"]
    assert jaxplain.as_function(model, variables, train=False)(x).shape == (10, 3)


def test_a_batched_equinox_module_is_told_about_per_example(vectors):
    result = _sites(f"{M}:batched_mlp", "--data", str(vectors))
    assert result.exit_code == 2 and "pass --checkpoint" not in result.output
    # as_function's own hint, once (the CLI's guess is left out where it is given)
    assert result.output.count("per_example=False") == 1
    assert "pass as_function(model, per_example=False)" in result.output
    x = np.load(vectors)["x"]
    f = jaxplain.as_function(_user_models.batched_mlp(), per_example=False)
    np.testing.assert_allclose(f(x), _user_models.batched_mlp()(x))
