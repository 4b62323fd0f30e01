"""The docstring examples of jaxplain.data run (against the session's cached model)."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["jaxplain.data", "jaxplain.data._digits",
                                  "jaxplain.data._pretrained", "jaxplain.data._train"])
def test_docstring_examples(name, jaxplain_home, digits_model, monkeypatch):
    monkeypatch.setenv("JAXPLAIN_HOME", str(jaxplain_home))  # never the user's cache
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
