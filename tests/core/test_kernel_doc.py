"""The examples of docs/kernel.md and the README's kernel tour run against the current code and
print what their comments say."""

import contextlib
import io
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "kernel.md"


def expected_outputs(block: str) -> list[str]:
    """What each ``print`` line of `block` is documented to print: its inline ``# comment``, or
    the comment lines right below it."""
    lines, out = block.splitlines(), []
    for k, line in enumerate(lines):
        if not line.lstrip().startswith("print("):
            continue
        code, _, comment = line.partition("#")
        below = []
        for nxt in lines[k + 1:]:
            if not nxt.startswith("#"):
                if nxt.startswith(" ") and not below:  # the rest of a loop body
                    continue
                break
            below.append(nxt[1:])
        out.append(comment if comment.strip() else " ".join(below))
    return out


def test_kernel_page_examples_run_and_print_what_their_comments_say():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 5
    namespace: dict = {}
    for block in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102
        printed = out.getvalue().splitlines()
        expected = expected_outputs(block)
        squash = lambda text: re.sub(r"\s+", "", text)  # noqa: E731
        assert [squash(p) for p in printed] == [squash(e) for e in expected]
    assert namespace["saliency"].shape == (4, 8, 8, 1)


def test_readme_tour_prints_what_it_says():
    tour = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)[0]
    out = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(tour, "README.md", "exec"), namespace)  # noqa: S102
    squash = lambda text: re.sub(r"\s+", "", text)  # noqa: E731
    assert squash(out.getvalue()) == squash("".join(expected_outputs(tour)))
    assert namespace["saliency"].shape == namespace["guided"].shape == (4, 8, 8, 1)
    # the tour's rule is equal by value, so a fresh instance reuses the compiled function
    rewrite, f, rule = namespace["jp"].rewrite_backward, namespace["f"], namespace["Guided"]
    assert rewrite(f, rule()) is rewrite(f, rule())
