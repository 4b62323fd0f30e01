"""Writing a report folder: ``index.html`` (self-contained CSS), the figures as PNG files, and
``report.json``, the same text and tables for programs to read."""

from __future__ import annotations

import datetime
import html
import json
import math
import numbers
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxplain.core._folders import folder_lock
from jaxplain.report._section import Figure, Section, Table

_BADGE = '<span class="badge">failed</span>'
_CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dde5; --accent: #2456a6; --bad: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: #f6f7f9; }
main { max-width: 980px; margin: 0 auto; padding: 32px 24px 64px; }
header h1 { margin: 0 0 4px; font-size: 28px; }
header p { margin: 0; color: var(--muted); }
nav, section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
               padding: 16px 24px; margin-top: 20px; }
nav h2 { font-size: 16px; margin: 0 0 8px; }
nav ol { margin: 0; padding-left: 22px; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
section h2 { margin: 4px 0 12px; font-size: 21px; }
.failed { border-color: var(--bad); }
.badge { display: inline-block; font-size: 12px; font-weight: 600; color: #fff;
         background: var(--bad); border-radius: 4px; padding: 1px 7px; margin-left: 8px;
         vertical-align: middle; }
pre { background: #f3f4f7; border: 1px solid var(--line); border-radius: 6px; padding: 12px;
      overflow-x: auto; font-size: 12.5px; line-height: 1.45; }
pre.error { background: #fdf1f0; border-color: #f0c4c0; }
table { border-collapse: collapse; margin: 12px 0 20px; font-size: 13.5px; }
caption { caption-side: bottom; text-align: left; color: var(--muted); font-size: 13px;
          padding-top: 6px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 12px 4px 0; text-align: left;
         vertical-align: top; }
th { border-bottom: 2px solid var(--fg); }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
figure { margin: 12px 0 20px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
footer { color: var(--muted); font-size: 12px; margin-top: 24px; text-align: center; }
"""


def write_report(
    sections: Sequence[Section], out_dir: str | os.PathLike[str], *, title: str
) -> Path:
    """Writes ``sections`` as a report folder a browser can open.

    ``out_dir/index.html`` holds the title, a table of contents and every section (failed
    sections are marked and show their traceback); ``out_dir/figures/`` holds the PNG files;
    ``out_dir/report.json`` holds the same sections for a program to read (see
    :func:`_report_json`). The new report is written to a hidden folder in ``out_dir`` first
    and then moved in place of ``index.html``, ``report.json`` and ``figures/``, so a failure
    part-way leaves an earlier report whole; the move holds a lock on ``out_dir``, so that of
    two processes writing the same folder at once, the files left are one run's.

    Args:
        sections: The sections, in order.
        out_dir: The report folder (created if needed).
        title: The page title.

    Returns:
        The path of ``index.html``.

    Example:
        >>> import tempfile
        >>> from jaxplain.report import Section, write_report
        >>> path = write_report([Section("Hello", text="A first section.")],
        ...                     tempfile.mkdtemp(), title="Demo")
        >>> path.name
        'index.html'
    """
    sections = tuple(sections)
    for i, s in enumerate(sections):
        if not isinstance(s, Section):
            raise TypeError(
                f"sections[{i}] must be a jaxplain.report.Section, got {type(s).__name__}"
            )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".report-", dir=out))  # the new report, until complete
    try:
        (stage / "figures").mkdir()
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        ids = _unique_ids(s.title for s in sections)
        (stage / "index.html").write_text(_page(sections, ids, title, stamp, stage / "figures"),
                                          encoding="utf-8")
        (stage / "report.json").write_text(_report_json(sections, ids, title, stamp),
                                           encoding="utf-8")
        for name in ("index.html", "report.json"):
            os.chmod(stage / name, 0o644)  # readable by a web server or other users
        figures = out / "figures"
        with folder_lock(out):  # a second writer waits: its files replace ours whole
            if figures.is_dir():
                os.replace(figures, stage / "old-figures")
            os.replace(stage / "figures", figures)
            os.replace(stage / "report.json", out / "report.json")
            os.replace(stage / "index.html", out / "index.html")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out / "index.html"


def _page(sections: tuple[Section, ...], ids: list[str], title: str, stamp: str,
          figures: Path) -> str:
    """The page of ``sections`` (their HTML `ids`), their figures written to ``figures``."""
    body = [_section_html(s, sid, figures) for s, sid in zip(sections, ids)]
    failed = sum(s.failed for s in sections)
    toc = "".join(
        f'<li><a href="#{sid}">{html.escape(s.title)}</a>{_BADGE if s.failed else ""}</li>'
        for s, sid in zip(sections, ids)
    )
    summary = f"{len(sections)} sections" + (f", {failed} failed" if failed else "")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8" />
<meta name="viewport" content="width=device-width, initial-scale=1" />
<title>{html.escape(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<header><h1>{html.escape(title)}</h1><p>{summary} &#183; generated {stamp}</p></header>
<nav><h2>Contents</h2><ol>{toc}</ol></nav>
{"".join(body)}
<footer>jaxplain</footer>
</main>
</body>
</html>
"""


def _section_html(section: Section, sid: str, figures: Path) -> str:
    css_class = ' class="failed"' if section.failed else ""
    badge = _BADGE if section.failed else ""
    parts = [f'<section id="{sid}"{css_class}>', f"<h2>{html.escape(section.title)}{badge}</h2>"]
    for para in re.split(r"\n\s*\n", section.text.strip()) if section.text.strip() else ():
        parts.append("<p>" + "<br />".join(html.escape(l) for l in para.splitlines()) + "</p>")
    n_fig = 0
    for item in section.items:
        if isinstance(item, Table):
            parts.append(_table_html(item))
        elif isinstance(item, Figure):
            n_fig += 1
            name = _figure_name(sid, n_fig)
            (figures / name).write_bytes(item.png)
            alt = html.escape(item.caption or f"{section.title}, figure {n_fig}", quote=True)
            cap = f"<figcaption>{html.escape(item.caption)}</figcaption>" if item.caption else ""
            parts.append(f'<figure><img src="figures/{name}" alt="{alt}" />{cap}</figure>')
    if section.failed:
        parts.append(f'<pre class="error">{html.escape(section.error)}</pre>')
    parts.append("</section>\n")
    return "".join(parts)


def _figure_name(sid: str, n: int) -> str:
    """The file, in ``figures/``, of the `n`-th figure (from 1) of the section of id `sid`."""
    return f"{sid}-{n}.png"


def _report_json(sections: tuple[Section, ...], ids: list[str], title: str, stamp: str) -> str:
    """``report.json``: ``{"title", "generated", "sections": [...]}``, one object per section
    with its ``title``, ``id`` (the page's anchor), ``text``, ``failed``, ``error`` and
    ``items`` in order: ``{"type": "table", "header", "rows", "caption"}`` (numbers as JSON
    numbers, NaN and infinities as null) or ``{"type": "figure", "file", "caption"}`` (the PNG's
    path in the report folder)."""

    def items(section: Section, sid: str) -> list[dict]:
        out, n_fig = [], 0
        for item in section.items:
            if isinstance(item, Table):
                out.append({"type": "table", "header": list(item.header),
                            "rows": [[_json_value(c) for c in row] for row in item.rows],
                            "caption": item.caption})
            else:
                n_fig += 1
                out.append({"type": "figure", "file": f"figures/{_figure_name(sid, n_fig)}",
                            "caption": item.caption})
        return out

    doc = {"title": title, "generated": stamp, "sections": [
        {"title": s.title, "id": sid, "text": s.text, "failed": s.failed, "error": s.error,
         "items": items(s, sid)} for s, sid in zip(sections, ids)]}
    return json.dumps(doc, indent=1, allow_nan=False)


def _json_value(value: object):
    """A table cell as JSON: bools, ints and finite floats as themselves (NumPy scalars too),
    NaN and infinities as None, anything else as its ``str``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    return value if isinstance(value, str) else str(value)


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    rows = "".join(
        "<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in table.rows
    )
    cap = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return (
        f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )


def _td(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"<td>{html.escape(str(value))}</td>"
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f'<td class="num">{text}</td>'


#: The longest id made from a title (the figure files are named after it, ``{id}-{n}.png``).
MAX_ID = 60


def _unique_ids(titles) -> list[str]:
    """An HTML id per title: lowercase words joined by '-', at most `MAX_ID` characters before
    the ``-2``, ``-3`` ... that keeps repeated ones apart."""
    ids: list[str] = []
    for t in titles:
        slug = re.sub(r"[^a-z0-9]+", "-", t.lower()).strip("-")
        base = slug[:MAX_ID].rstrip("-") or "section"
        sid, n = base, 1
        while sid in ids:
            n += 1
            sid = f"{base}-{n}"
        ids.append(sid)
    return ids
