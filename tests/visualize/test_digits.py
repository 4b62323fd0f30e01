"""Feature visualization on the embedded digits CNN: the demo section (quick mode)."""


def test_demo_section_renders_channels_that_beat_the_data(demo_context):
    from jaxplain.report import Section
    from jaxplain.visualize._demo import demo_section

    section = demo_section(demo_context)
    assert isinstance(section, Section) and not section.failed
    table = section.items[0]
    for site, channels, live, beat, ratio in table.rows:
        assert channels == 16 and live >= 12
        # Rendered inputs activate (almost) every live channel more than any test digit does.
        assert beat >= live - 3, (site, live, beat)
        assert ratio > 1.0
    assert "NMF" in section.text and len(section.items) == 2
