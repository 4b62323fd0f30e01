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


def test_demo_section_renders_the_mlp_units_of_the_digits_vit(demo_context, digits_vit):
    import dataclasses

    from jaxplain.visualize._demo import demo_section

    model, variables, f = digits_vit
    ctx = dataclasses.replace(demo_context, model=model, variables=variables, f=f)
    section = demo_section(ctx)
    assert not section.failed
    table = section.items[0]
    assert [row[0] for row in table.rows] == ["blocks/0/relu", "blocks/1/relu"]
    for site, channels, live, beat, ratio in table.rows:
        assert channels == 64 and live >= 48 and beat >= live - 8 and ratio > 1.0
