"""The docstring examples of jaxplain.subnet run and give what they show."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["jaxplain.subnet._extract"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
