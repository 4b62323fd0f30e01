"""The examples of docs/kernel.md run against the current code and print what the page says."""

import contextlib
import io
import pathlib
import re

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "kernel.md"


def test_kernel_page_examples_run_and_match_their_comments():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102
    printed = out.getvalue()
    assert "'block1/relu_1', 'block1', 'head']" in printed
    assert "(4, 8, 8, 8)" in printed and "(4, 10)" in printed and "0.0" in printed
    assert namespace["saliency"].shape == (4, 8, 8, 1)
