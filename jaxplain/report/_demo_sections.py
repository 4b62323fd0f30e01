"""The sections of ``jaxplain demo`` and ``jaxplain explain``, in report order, as
``"module:function"`` strings.

Each names a function ``demo_section(ctx: DemoContext) -> Section`` that picks its sites and
settings from the model it is given (the defaults' own on the digits CNN). To add a family's
section, append one line here.
"""

SECTIONS: tuple[str, ...] = (
    "jaxplain.report._foundation:demo_section",
    "jaxplain.attribution._demo:demo_section",
    "jaxplain.report._transformers:demo_section",
    "jaxplain.rules._demo:demo_section",
    "jaxplain.pathways._demo:demo_section",
    "jaxplain.visualize._demo:demo_section",
    "jaxplain.metrics._demo:demo_section",
    "jaxplain.subnet._demo:demo_section",
)
