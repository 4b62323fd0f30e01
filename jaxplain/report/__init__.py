"""Reports: sections of text, tables and figures, written as an HTML folder; the demo registry.

Example:
    >>> import tempfile
    >>> from jaxplain.report import Section, write_report
    >>> sec = Section("Accuracy", text="97.8% on the test split.").with_table(
    ...     header=["split", "accuracy"], rows=[["test", 0.978]])
    >>> write_report([sec], tempfile.mkdtemp(), title="jaxplain").name
    'index.html'
"""

from jaxplain.report._context import DemoContext as DemoContext
from jaxplain.report._context import no_progress as no_progress
from jaxplain.report._html import write_report as write_report
from jaxplain.report._runner import load_section as load_section
from jaxplain.report._runner import load_sections as load_sections
from jaxplain.report._runner import run_section as run_section
from jaxplain.report._runner import section_name as section_name
from jaxplain.report._section import Figure as Figure
from jaxplain.report._section import Section as Section
from jaxplain.report._section import Table as Table

__all__ = [
    "DemoContext", "Figure", "Section", "Table", "load_section", "load_sections", "no_progress",
    "run_section", "section_name", "write_report",
]
