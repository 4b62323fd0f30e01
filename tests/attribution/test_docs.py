"""The docstring examples of the attribution modules run and print what they say."""

import doctest
import importlib

import pytest

MODULES = ["_attention", "_gradient", "_integrated", "_smoothgrad", "_perturbation", "_shapley",
           "_surrogate", "_modified", "_expected", "_lrp", "_lrp_rules", "_site", "_cam"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"jaxplain.attribution.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
