"""The demo section runs in quick mode on the default model and reports its numbers."""

from jaxplain.subnet._demo import demo_section


def test_demo_section(demo_context):
    section = demo_section(demo_context)
    assert not section.failed
    assert "units" in section.text and "agreement" in section.text
    assert [type(i).__name__ for i in section.items] == ["Table", "Figure", "Figure"]
