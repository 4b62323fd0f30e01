"""docs/pathways.md's example runs; the docstring examples hold; every public name is documented."""

import contextlib
import doctest
import importlib
import io
import pathlib
import re

import pytest

import jaxplain.pathways as P

PAGE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "pathways.md"


@pytest.mark.parametrize("name", ["_contributions", "_select", "_gradient"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(f"jaxplain.pathways.{name}"))
    assert result.attempted > 0 and result.failed == 0


def test_every_public_name_is_documented():
    text = PAGE.read_text(encoding="utf-8")
    public = [n for n in dir(P) if not n.startswith("_")]
    assert not [n for n in public if not re.search(rf"`{n}\(", text)]


def test_page_example_runs(jaxplain_home, digits_model, monkeypatch):
    monkeypatch.setenv("JAXPLAIN_HOME", str(jaxplain_home))  # the session's model
    (block,) = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    block = block.replace("steps=1000", "steps=20")  # the documented call, shortened for CI
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(block, "pathways.md", "exec"), namespace)  # noqa: S102
    pg, x, masks = namespace["pg"], namespace["x"], namespace["masks"]
    assert pg.shape == x.shape and namespace["maps"].shape == x.shape[:3]
    assert set(masks) == set(namespace["scores"]) and out.getvalue().count("[") >= 3
