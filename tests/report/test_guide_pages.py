"""docs/getting_started.md's examples run and hold; docs/index.md links every page."""

import contextlib
import io
import pathlib
import re

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"


def test_getting_started_examples_run(jaxplain_home, digits_model, monkeypatch, tmp_path):
    monkeypatch.setenv("JAXPLAIN_HOME", str(jaxplain_home))  # the session's model, not ~/.cache
    monkeypatch.chdir(tmp_path)  # the report example writes ./my-report
    text = (DOCS / "getting_started.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 5  # explain's model modules (Linen, NNX), the default, a report, its JSON
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in blocks:
            exec(compile(block, "getting_started.md", "exec"), namespace)  # noqa: S102
    assert float(out.getvalue()) >= 0.97  # the documented accuracy
    digits = namespace["digits"]
    assert (digits.x_train.shape, digits.x_test.shape) == ((1347, 8, 8, 1), (450, 8, 8, 1))
    index = tmp_path / "my-report" / "index.html"
    assert namespace["path"].resolve() == index
    assert len(list((index.parent / "figures").iterdir())) == 1
    assert "My method" in index.read_text()
    assert callable(namespace["restore"])  # the explain example's factory
    assert namespace["scores"] == {"a": 0.97, "b": 0.91}  # report.json's table


def test_readme_examples_of_the_embedded_models_run(jaxplain_home, digits_model, digits_vit,
                                                    monkeypatch):
    import numpy as np

    monkeypatch.setenv("JAXPLAIN_HOME", str(jaxplain_home))
    text = (DOCS.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 3  # the kernel tour (tests/core/test_kernel_doc.py), the CNN, the ViT
    namespace: dict = {}
    for block in blocks[1:]:                 # each block on its own: it imports what it uses
        fresh: dict = {}
        exec(compile(block, "README.md", "exec"), fresh)  # noqa: S102
        namespace.update(fresh)
    maps, rollout, pixels = namespace["maps"], namespace["rollout"], namespace["pixels"]
    assert [m.shape for m in maps.values()] == [(4, 4, 16, 16)] * 2
    assert rollout.shape == (4, 16, 16) and pixels.shape == (4, 8, 8, 1)
    logits = np.asarray(namespace["vit"](namespace["x"]))[:, 3]
    np.testing.assert_allclose(np.asarray(pixels).reshape(4, -1).sum(1), logits, rtol=1e-4,
                               atol=1e-4)
    assert namespace["relevance"].shape == (4, 8, 8, 1)


def test_index_links_every_page_and_every_link_resolves():
    text = (DOCS / "index.md").read_text()
    links = set(re.findall(r"\]\(([^)#]+\.md)\)", text))
    pages = {p.name for p in DOCS.glob("*.md")} - {"index.md"}
    assert links == pages
