"""docs/concepts.md's examples run, in order, and give what they say."""

import pathlib
import re

import numpy as np

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"


def test_concepts_page_examples_run(jaxplain_home, digits_model, monkeypatch):
    monkeypatch.setenv("JAXPLAIN_HOME", str(jaxplain_home))  # the session's model
    text = (DOCS / "concepts.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 4  # tcav significant, tcav not significant, lower-level, dissection
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "concepts.md", "exec"), namespace)  # noqa: S102
    r, r3, s, score = (namespace[k] for k in ("r", "r3", "s", "score"))
    # What the page says: the zeros concept is significant for class 0 at relu_1 (every concept
    # CAV raises the 0 logit), and not significant for class 3.
    claimed = [re.search(rf"float\({n}\.score\).*# \(([\d.]+), ([\d.]+), (True|False)\)", text)
               for n in ("r", "r3")]
    for result, m in zip((r, r3), claimed):
        np.testing.assert_allclose(float(result.score), float(m.group(1)), atol=0.02)
        np.testing.assert_allclose(float(result.p_value), float(m.group(2)), atol=0.01)
        assert bool(result.significant) is (m.group(3) == "True")
    assert bool(r.significant) and float(r.score) > 0.9 and float(r.p_value) < 0.03
    assert not bool(r3.significant)
    # "here 0.85 to 0.98": held-out accuracies, above LOW_ACCURACY (no warning).
    np.testing.assert_allclose([float(r.accuracies.min()), float(r.accuracies.max())],
                               [0.85, 0.98], atol=0.01)
    assert s.shape == (namespace["x0"].shape[0],)
    np.testing.assert_allclose(float(score), float(np.mean(np.asarray(s) > 0)))
    scores, same = namespace["scores"], namespace["same"]
    assert scores.shape == (16, 2)
    np.testing.assert_allclose(np.asarray(scores), np.asarray(same), rtol=1e-6)
