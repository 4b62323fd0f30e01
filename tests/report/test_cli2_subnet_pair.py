"""The sub-network section of the default DigitsCNN on data without digits 3 and 8."""

import re

import jax
import jax.numpy as jnp
import numpy as np
from click.testing import CliRunner

from jaxplain.cli import main


def digits_cnn():
    """A factory: the default DigitsCNN (random weights) and its variables."""
    from jaxplain.data import DigitsCNN

    model = DigitsCNN()
    return model, model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))


def test_the_pair_of_a_digits_cnn_is_two_classes_of_the_data(tmp_path, monkeypatch):
    # digits 0..5 only: "classes 3 vs 8 (region: 20 test examples)" of 10 threes and no eight
    from jaxplain import data

    monkeypatch.setenv("JAXPLAIN_HOME", str(tmp_path / "home"))
    digits = data.load_digits()
    x, y = np.asarray(digits.x_test), np.asarray(digits.y_test)
    keep = y < 6
    path = tmp_path / "digits.npz"
    np.savez(path, x=x[keep][:90], y=y[keep][:90])
    result = CliRunner().invoke(main, [
        "explain", "tests.report.test_cli2_subnet_pair:digits_cnn", "--data", str(path),
        "--quick", "--only", "subnet", "--no-compile-cache", "--out", str(tmp_path / "out")],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    a, b, region = map(int, re.search(r"classes (\d+) vs (\d+) \(region: (\d+) test",
                                      result.output).groups())
    counts = np.bincount(y[keep][:90], minlength=10)
    assert counts[a] >= 11 and counts[b] >= 11 and a != b
    unseen = int(re.search(r"on (\d+) unseen", result.output).group(1))
    assert region == 20 and unseen == counts[a] + counts[b] - region
