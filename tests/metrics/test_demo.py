"""The metrics demo section runs in quick mode and its table is consistent."""

from __future__ import annotations

import pytest


def test_demo_section_quick(demo_context):
    from jaxplain.metrics._demo import TABLE_METRICS, demo_section

    sec = demo_section(demo_context)
    table = sec.items[0]
    assert table.header == ("method", *TABLE_METRICS)
    rows = {r[0]: dict(zip(TABLE_METRICS, r[1:])) for r in table.rows}
    assert "gradient" in rows and "random (control)" in rows
    # On a trained CNN a gradient-based map beats the random control on deletion (MoRF and
    # LeRF), and the random map's LeRF and MoRF areas are close to each other.
    for name in ("gradient", "gradient x input"):
        assert rows[name]["deletion_morf"] < rows["random (control)"]["deletion_morf"]
        assert rows[name]["deletion_lerf"] > rows["random (control)"]["deletion_lerf"]
    rnd = rows["random (control)"]
    assert rnd["deletion_morf"] == pytest.approx(rnd["deletion_lerf"], abs=0.2)
    assert "failed" not in sec.text


def _vector_context():
    """A quick context on an Equinox MLP of 12-feature vectors (no images)."""
    import jax
    import numpy as np

    import jaxplain
    from jaxplain.report import DemoContext
    from jaxplain.report._user import ReportData
    from tests.report import _user_models

    f = jaxplain.as_function(_user_models.mlp)
    rng = np.random.default_rng(0)
    x_train = rng.normal(1.0, 1.0, size=(40, 12)).astype(np.float32)
    x_test = rng.normal(1.0, 1.0, size=(20, 12)).astype(np.float32)
    data = ReportData(x_train, np.argmax(f(x_train), -1), x_test, np.argmax(f(x_test), -1))
    return DemoContext(model=_user_models.mlp, variables=None, f=f, data=data,
                       key=jax.random.key(0), quick=True, noun="examples")


def test_demo_section_on_vectors_starts_insertion_from_the_mean_example():
    # insertion's default baseline, a blur, needs images: every method used to fail on it
    import jax.numpy as jnp
    import numpy as np

    from jaxplain import attribution as A
    from jaxplain.metrics import insertion
    from jaxplain.metrics._demo import TABLE_METRICS, demo_section

    ctx = _vector_context()
    sec = demo_section(ctx)
    rows = {r[0]: dict(zip(TABLE_METRICS, r[1:])) for r in sec.items[0].rows}
    assert {"gradient", "gradient x input", "integrated gradients"} <= set(rows)
    assert "failed" not in sec.text and "blur" not in sec.text
    assert "the mean training example" in sec.items[0].caption
    x = jnp.asarray(ctx.data.x_test[:16])
    t = jnp.argmax(ctx.f(x), -1)
    want = insertion(ctx.f, x, t, A.gradient(ctx.f, x, t), steps=10,
                     baseline=jnp.asarray(ctx.data.x_train).mean(0)).area.mean()
    np.testing.assert_allclose(rows["gradient"]["insertion"], float(want), atol=1e-4)  # 4 d.p.


def test_a_section_in_which_every_method_fails_is_marked_failed(monkeypatch):
    from jaxplain.metrics import _demo
    from jaxplain.metrics._compare import random_attribution
    from jaxplain.report import run_section

    def broken(f, x, target):
        raise ValueError("this method cannot read these inputs")

    monkeypatch.setattr(_demo, "attribution_methods", lambda key, quick=False: {
        "broken": broken, "random (control)": random_attribution(key)})
    sec = run_section(_vector_context(), "jaxplain.metrics._demo:demo_section")
    assert sec.failed and "(failed)" in sec.title
    assert "no attribution method could be evaluated" in sec.error
    assert "broken: ValueError: this method cannot read these inputs" in sec.error


def test_deletion_figure_is_titled_after_the_data_not_the_last_method():
    # The loop over the curves reused the name of the data: "Deletion curves on random (control)".
    import matplotlib.pyplot as plt
    import numpy as np

    from jaxplain.metrics._demo import _figure

    curves = {"gradient": np.linspace(1, 0, 5), "random (control)": np.linspace(1, 0.5, 5)}
    fig = _figure(curves, "scikit-learn's 8x8 digits", "pixels")
    ax = fig.axes[0]
    assert ax.get_title() == "Deletion curves on scikit-learn's 8x8 digits"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(curves)
    assert [line.get_linestyle() for line in ax.get_lines()] == ["-", "--"]
    plt.close(fig)
