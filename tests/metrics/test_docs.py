"""The docstring examples of jaxplain.metrics run and give what they show."""

import doctest
import importlib
import pathlib
import re

import pytest

MODULES = ["_faithfulness", "_robustness", "_randomization", "_similarity", "_complexity",
           "_compare"]


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
