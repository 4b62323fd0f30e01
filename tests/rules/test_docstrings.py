"""The docstring examples of jaxplain.rules run and print what they say."""

import doctest

import numpy as np

from jaxplain.rules import _binarize, _search


def test_docstring_examples():
    for module in (_search, _binarize):
        result = doctest.testmod(module, extraglobs={"np": np}, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
        assert result.attempted > 0
