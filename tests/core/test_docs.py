"""The kernel's docstring examples run and give what they show."""

import doctest
import importlib

import pytest

MODULES = ["jaxplain.core._capture", "jaxplain.core._backward", "jaxplain.core._adapters",
           "jaxplain.core._select", "jaxplain.core._caches"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
