"""The docstring examples of jaxplain.metrics run and give what they show."""

import doctest
import importlib
import pathlib
import re

import pytest

MODULES = ["_faithfulness", "_robustness", "_randomization", "_similarity", "_complexity",
           "_compare", "_correlation", "_monotonicity", "_irof", "_infidelity", "_random_logit"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"jaxplain.metrics.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_every_public_name_is_documented():
    import jaxplain.metrics as M

    text = (pathlib.Path(__file__).parents[2] / "docs" / "metrics.md").read_text(encoding="utf-8")
    public = [n for n in dir(M) if not n.startswith("_")]
    missing = [n for n in public if not re.search(rf"[`.]{n}\b", text)]
    assert not missing, f"docs/metrics.md does not mention {missing}"


def _metrics_md() -> str:
    return (pathlib.Path(__file__).parents[2] / "docs" / "metrics.md").read_text(encoding="utf-8")


def test_the_overview_lerf_change_example_is_not_all_zeros():
    # With the default zeros baseline gradient x input scores exactly 0 at every fraction on
    # the digits (their background is 0): the overview must show a baseline that says something.
    import numpy as np

    block = re.search(r"```python\n(.*?)```", _metrics_md(), re.S).group(1)
    lines = block.splitlines()
    setup = "\n".join(lines[: next(i for i, s in enumerate(lines) if s.startswith("curve ="))])
    line = next(s for s in lines if "pixel_perturbation(" in s).split("#")[0].strip()
    scope: dict = {}
    exec(setup, scope)
    assert np.asarray(eval(line, scope)).max() > 1e-3, line


def test_compare_defaults_are_documented_as_they_are():
    import inspect

    from jaxplain.metrics import _compare, continuity, deletion

    text = " ".join(_metrics_md().split())
    params = inspect.signature(_compare.compare).parameters
    names = ", ".join(f'"{m}"' for m in _compare.DEFAULT_METRICS)
    assert f"`metrics=({names})`" in text
    assert f"`steps={params['steps'].default}`" in text
    assert f"`samples={params['samples'].default}`" in text
    own_steps = inspect.signature(deletion).parameters["steps"].default
    own_samples = inspect.signature(continuity).parameters["samples"].default
    assert f"`deletion` takes {own_steps} steps, `continuity` {own_samples} samples" in text


def test_the_data_argument_of_the_retraining_metrics_is_documented():
    text = " ".join(_metrics_md().split())
    for name in ("data_randomization_check", "roar"):
        assert re.search(rf"metrics\.{name}\([^`]*digits=own[,)]", text, re.S), name
    assert text.count("data.Digits(x_train=x_train, y_train=y_train, x_test=x_test, "
                      "y_test=y_test)") == 2
    assert "defaults to the embedded 8x8 digits" in text


def test_continuity_is_flagged_as_not_scale_invariant_next_to_the_table():
    text = _metrics_md()
    table_end = text.index("| random (control) |")
    after = text[table_end: table_end + 800]
    assert "Continuity is not scale-invariant" in after
