"""The metrics section on vector inputs: the occlusion window fits the inputs, and a constant
map (LRP's Flat rule on a dense first layer) is not named best (a user trial's findings)."""

import jax.numpy as jnp
import numpy as np

from jaxplain import attribution as A
from jaxplain.metrics import _demo
from jaxplain.metrics._compare import random_attribution
from jaxplain.metrics._demo import TABLE_METRICS, fit_occlusion
from tests.metrics.test_demo import _vector_context


def _rows(section):
    return {r[0]: dict(zip(TABLE_METRICS, r[1:])) for r in section.items[0].rows}


def test_occlusion_takes_the_attribution_sections_window(monkeypatch):
    # 2x2 was hard-coded: "failed: occlusion 2x2 (ValueError ...)" on vectors
    full = _demo.attribution_methods
    monkeypatch.setattr(_demo, "attribution_methods", lambda key, quick=False: {
        k: m for k, m in full(key).items() if k in (_demo.OCCLUSION, "random (control)")})
    section = _demo.demo_section(_vector_context())  # 12 features: runs of 1
    assert "failed" not in section.text
    assert list(_rows(section)) == ["occlusion 1", "random (control)"]
    methods = fit_occlusion({"gradient": A.gradient, _demo.OCCLUSION: None}, (16, 16, 3))
    assert list(methods) == ["gradient", "occlusion 4x4"]  # a quarter of the image side
    assert list(fit_occlusion({_demo.OCCLUSION: None}, (8, 8, 1))) == ["occlusion 2x2"]


def test_a_constant_map_is_not_named_best(monkeypatch):
    def flat(f, x, target):  # what EpsilonPlusFlat gives on a dense first layer
        return jnp.ones_like(x)

    monkeypatch.setattr(_demo, "attribution_methods", lambda key, quick=False: {
        "gradient": A.gradient, "gradient x input": A.gradient_x_input, "flat": flat,
        "random (control)": random_attribution(key)})
    section = _demo.demo_section(_vector_context())
    rows = _rows(section)
    assert abs(rows["flat"]["sparseness"]) < 1e-6
    assert rows["flat"]["continuity"] < min(rows["gradient"]["continuity"],
                                            rows["gradient x input"]["continuity"])  # "best"
    assert "best continuity: flat" not in section.text
    assert "best continuity: gradient" in section.text
    assert "left out of best: flat (a constant map, sparseness 0" in section.text
    assert np.isfinite([v for r in rows.values() for v in r.values()]).all()
