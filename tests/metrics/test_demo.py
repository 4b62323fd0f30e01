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
