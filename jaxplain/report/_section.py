"""Report sections: immutable values holding a title, text, tables and rendered figures."""

from __future__ import annotations

import dataclasses
import io
import numbers
from collections.abc import Sequence
from typing import Any, Union

import numpy as np


@dataclasses.dataclass(frozen=True)
class Table:
    """A table of plain values (str, int, float, bool), one tuple per row."""

    header: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    caption: str = ""


@dataclasses.dataclass(frozen=True)
class Figure:
    """A figure, already rendered to PNG bytes (so the section holds no live matplotlib state)."""

    png: bytes = dataclasses.field(repr=False)
    caption: str = ""


Item = Union[Table, Figure]


@dataclasses.dataclass(frozen=True)
class Section:
    """One part of a report: a title, a text summary, then tables and figures in order.

    Sections are immutable; each ``with_*`` method returns a new section.

    Attributes:
        title: The heading (also the entry in the table of contents).
        text: A short plain-text summary (blank lines separate paragraphs); ``jaxplain demo``
            prints it too.
        items: The :class:`Table` and :class:`Figure` items, in the order added.
        error: For a section whose code failed, the traceback (the report marks it as failed).

    Example:
        >>> import matplotlib.figure
        >>> fig = matplotlib.figure.Figure(figsize=(2, 2))
        >>> _ = fig.add_subplot().plot([0, 1], [1, 0])
        >>> sec = (Section("Demo", text="Two rows and a line.")
        ...        .with_table(header=["name", "value"], rows=[["a", 1], ["b", 2.5]])
        ...        .with_figure(fig, caption="A line."))
        >>> [type(item).__name__ for item in sec.items]
        ['Table', 'Figure']
    """

    title: str
    text: str = ""
    items: tuple[Item, ...] = ()
    error: str = ""

    def __post_init__(self):
        if not isinstance(self.title, str) or not self.title.strip():
            raise ValueError(f"Section title must be a non-empty str, got {self.title!r}")
        if not isinstance(self.text, str):
            raise TypeError(f"Section text must be a str, got {type(self.text).__name__}")
        for item in self.items:
            if not isinstance(item, (Table, Figure)):
                raise TypeError(f"Section items must be Table or Figure, got {type(item).__name__}")

    @property
    def failed(self) -> bool:
        """Whether this section records a failure (``error`` is set)."""
        return bool(self.error)

    def with_text(self, text: str) -> Section:
        """A copy with ``text`` appended to the summary as a new paragraph.

        Args:
            text: Plain text; blank lines separate paragraphs.

        Returns:
            A new :class:`Section`; ``self`` is unchanged.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        joined = f"{self.text}\n\n{text}" if self.text else text
        return dataclasses.replace(self, text=joined)

    def with_table(
        self, header: Any, rows: Sequence[Sequence[Any]] | None = None, caption: str | None = None
    ) -> Section:
        """A copy with a table appended.

        Pass ``header`` and ``rows``, or one table value with ``.header`` and ``.rows`` (and
        maybe ``.caption``): ``jaxplain.rules.RuleSet.to_table()``, the ``jaxplain.metrics``
        ``Table`` of ``compare``, or a report :class:`Table`.

        Args:
            header: Column names ``(columns,)``, or a table value (then ``rows`` is omitted).
            rows: One sequence per row, each as long as ``header``. Cells may be str, bool,
                Python or NumPy/JAX scalars (stored as Python numbers); anything else is
                stored as ``str(cell)``.
            caption: Shown under the table (default: a table value's ``caption``, or none).

        Returns:
            A new :class:`Section` with a :class:`Table` of ``(columns,)`` ``header`` and
            ``(rows, columns)`` cells as its last item; ``self`` is unchanged.

        Raises:
            TypeError: ``rows`` omitted while ``header`` is no table value.
            ValueError: a row whose length differs from the header's.
        """
        if rows is None:
            if not (hasattr(header, "header") and hasattr(header, "rows")):
                raise TypeError(
                    f"with_table takes header= and rows=, or one table with .header and .rows "
                    f"(e.g. jaxplain.rules.RuleSet.to_table()); got only header= of type "
                    f"{type(header).__name__}"
                )
            table = header
            header, rows = table.header, table.rows
            caption = getattr(table, "caption", "") if caption is None else caption
        caption = "" if caption is None else str(caption)
        header = tuple(str(h) for h in header)
        table_rows = []
        for i, row in enumerate(rows):
            row = tuple(_cell(c) for c in row)
            if len(row) != len(header):
                raise ValueError(
                    f"rows[{i}] has {len(row)} cells but header has {len(header)} columns: {row!r}"
                )
            table_rows.append(row)
        return self._add(Table(header, tuple(table_rows), caption))

    def with_figure(self, fig: Any, caption: str = "", *, dpi: int = 120) -> Section:
        """A copy with ``fig`` rendered to PNG and appended.

        The figure is closed afterwards (if pyplot manages it), so sections can be built in a
        loop without accumulating open figures.

        Args:
            fig: A ``matplotlib.figure.Figure``.
            caption: Shown under the figure.
            dpi: Resolution of the PNG.

        Returns:
            A new :class:`Section` with a :class:`Figure` (the PNG bytes) as its last item;
            ``self`` is unchanged.
        """
        import matplotlib.figure
        import matplotlib.pyplot as plt

        if not isinstance(fig, matplotlib.figure.Figure):
            raise TypeError(f"fig must be a matplotlib.figure.Figure, got {type(fig).__name__}")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        return self._add(Figure(buf.getvalue(), str(caption)))

    def _add(self, item: Item) -> Section:
        return dataclasses.replace(self, items=self.items + (item,))


def _cell(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float)):
        return value
    if hasattr(value, "shape") and hasattr(value, "dtype") and np.size(value) == 1:
        return np.asarray(value).reshape(()).item()  # NumPy / JAX scalars and 1-element arrays
    if isinstance(value, numbers.Real):
        return float(value)
    return str(value)
