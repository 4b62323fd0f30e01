"""The attribution family on the default digits CNN: docs example, demo section, completeness."""

import pathlib
import re

import jax.numpy as jnp
import numpy as np

from jaxplain import attribution as A
from jaxplain.lrp import EpsilonPlusFlat

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "attribution.md"


def test_docs_example_runs(digits_model, jaxplain_home, monkeypatch):
    monkeypatch.setenv("JAXPLAIN_HOME", str(jaxplain_home))
    block = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    scope = {}
    exec(compile(block, str(DOC), "exec"), scope)  # noqa: S102 - our own documentation
    assert scope["cam"].shape == (8, 8, 8, 1) and scope["rel"].shape == (8, 8, 8, 1)
    assert scope["ggc"].shape == scope["gs"].shape == scope["dls"].shape == (8, 8, 8, 1)
    assert scope["cpp"].shape == scope["scc"].shape == (8, 8, 8, 1)
    assert np.isfinite(np.asarray(scope["scc"])).all() and np.asarray(scope["cpp"]).max() > 0
    f, x, t, refs = scope["f"], scope["x"], scope["t"], scope["refs"]
    t = np.asarray(t)
    gap = np.asarray(f(x))[np.arange(8), t] - np.asarray(f(refs))[:, t].mean(axis=0)
    np.testing.assert_allclose(np.asarray(scope["dls"]).reshape(8, -1).sum(1), gap, rtol=0,
                               atol=1e-4 * np.abs(gap).max())


def test_deeplift_and_ig_complete_on_the_residual_cnn(digits_model):
    _, _, f, digits = digits_model
    x = jnp.asarray(digits.x_test[:6])
    t = jnp.argmax(f(x), axis=-1)
    gap = np.asarray(f(x) - f(jnp.zeros_like(x)))[np.arange(6), np.asarray(t)]
    dl = A.completeness_delta(f, x, t, A.deeplift(f, x, t))
    assert (np.abs(np.asarray(dl)) <= 1e-4 * np.abs(gap).max()).all()
    ig = A.completeness_delta(f, x, t, A.integrated_gradients(f, x, t, steps=64))
    assert (np.abs(np.asarray(ig)) <= 0.05 * np.abs(gap).max()).all()
    rel = np.asarray(A.lrp(f, x, t, rules=EpsilonPlusFlat()))
    assert np.isfinite(rel).all() and (rel.reshape(6, -1).sum(1) > 0).all()


def test_demo_section(demo_context):
    from jaxplain.attribution._demo import demo_section

    section = demo_section(demo_context)
    assert "Completeness" in section.text
    assert len(section.items) == 2
    names = [row[0] for row in section.items[0].rows]
    assert any(n.startswith("gradient shap") for n in names) and "guided grad-cam" in names
    assert {"grad-cam++", "score-cam"} <= set(names)
    # DeepLIFT-SHAP sums to f(x) - mean f(b) over its training baselines (float32 ReLU net).
    delta = float(re.search(r"DeepLIFT-SHAP .* baselines: max \|delta\| ([0-9.e+-]+)\.",
                            section.text)[1])
    assert delta < 1e-3
