"""docs/concepts.md's examples run, in order, and give what they say."""

import pathlib
import re

import numpy as np

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"


def test_concepts_page_examples_run(jaxplain_home, digits_model, monkeypatch):
    monkeypatch.setenv("JAXPLAIN_HOME", str(jaxplain_home))  # the session's model
    text = (DOCS / "concepts.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 3  # tcav, the lower-level pieces, dissection
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "concepts.md", "exec"), namespace)  # noqa: S102
    r, s, score = namespace["r"], namespace["s"], namespace["score"]
    assert 0.0 <= float(r.score) <= 1.0 and 0.0 <= float(r.p_value) <= 1.0
    assert s.shape == (namespace["x3"].shape[0],)
    np.testing.assert_allclose(float(score), float(np.mean(np.asarray(s) > 0)))
    scores, same = namespace["scores"], namespace["same"]
    assert scores.shape == (16, 2)
    np.testing.assert_allclose(np.asarray(scores), np.asarray(same), rtol=1e-6)
