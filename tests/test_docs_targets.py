"""docs/targets.md's examples run in order, print what their comments say, and hold what the
page says of them."""

import contextlib
import io
import pathlib
import re
import warnings

import pytest

from jaxplain.attribution._integrated import _integrated_gradients
from tests.core.test_kernel_doc import expected_outputs

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "targets.md"


def _squash(text: str) -> str:
    """The printed value a comment documents: the text before any ``: why``, no whitespace."""
    return re.sub(r"\s+", "", text.split(":")[0])


@pytest.fixture(scope="module")
def page():
    """The page's blocks run in order in one namespace: (namespace, [(block, printed lines)])."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    namespace: dict = {}
    runs = []
    for block in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the product warnings the page describes
            exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - our docs
        runs.append((block, out.getvalue().splitlines()))
    return namespace, runs


def test_targets_page_examples_print_what_their_comments_say(page):
    _, runs = page
    assert len(runs) == 9
    for block, printed in runs:
        expected = [_squash(e) for e in expected_outputs(block)]
        assert [_squash(p) for p in printed] == expected, block[:60]
    assert page[0]["masks"].sum((1, 2)).min() > 0  # every image has a region of its own


def test_one_flattened_segmentation_function_compiles_once_for_every_pixel(page):
    ns = page[0]
    A, flat, img, W, C = (ns[k] for k in ("A", "flat", "img", "W", "C"))
    before = _integrated_gradients._cache_size()
    for i in range(3):
        A.integrated_gradients(flat, img, (i * W + 2) * C, steps=16)
    assert _integrated_gradients._cache_size() == before
    for i in range(3):  # a fresh lambda per pixel compiles each time
        A.integrated_gradients(lambda z, i=i: ns["seg"](z)[:, i, 2, :], img, 0, steps=16)
    assert _integrated_gradients._cache_size() == before + 3
