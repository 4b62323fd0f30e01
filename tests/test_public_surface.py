"""The public surface is explicit: each package's ``__all__`` lists exactly what it exports,
and every exported name is documented in docs/*.md or README.md (STYLE.md §11)."""

import importlib
import pathlib
import re
import types

import pytest

import jaxplain

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("jaxplain", *(f"jaxplain.{name}" for name in jaxplain._SUBPACKAGES))


def _public(module) -> set[str]:
    """Names a user can reach: not underscored, not a module that an import left behind."""
    return {name for name, value in vars(module).items()
            if not name.startswith("_") and not isinstance(value, types.ModuleType)}


@pytest.mark.parametrize("package", PACKAGES)
def test_all_lists_exactly_the_public_names(package):
    module = importlib.import_module(package)
    exported = module.__all__
    assert len(set(exported)) == len(exported), f"{package}.__all__ repeats a name"
    assert not [n for n in exported if n.startswith("_")], f"{package}.__all__ exports private"
    assert not [n for n in exported if not hasattr(module, n)], f"{package}.__all__: no such"
    assert _public(module) <= set(exported), f"not in {package}.__all__"
    namespace: dict = {}
    exec(f"from {package} import *", namespace)  # noqa: S102
    assert set(namespace) - {"__builtins__"} == set(exported)


def test_the_top_level_exports_every_subpackage():
    assert set(jaxplain._SUBPACKAGES) <= set(jaxplain.__all__)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_is_documented(package):
    docs = "\n".join(p.read_text() for p in [*sorted((ROOT / "docs").glob("*.md")),
                                             ROOT / "README.md"])
    module = importlib.import_module(package)
    missing = [n for n in module.__all__ if not re.search(rf"\b{re.escape(n)}\b", docs)]
    assert not missing, f"{package} exports names no page of docs/ or README.md mentions"
