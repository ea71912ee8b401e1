"""The run report's HTML building blocks: style, number format, tables, embedded figures."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

from sbi_rounds.run import Run

__all__ = ["CSS", "format_number", "image", "run_figure", "table"]

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 78em; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f2f2f2; } tr.flagged td { background: #fde2e2; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; } .stop { background: #fff4d6; padding: 0.5em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def format_number(value: Any) -> str:
    """How the report shows a value: ``-`` for missing, 4 significant digits for floats."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return "-" if value == -1 else str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cell(value: Any) -> str:
    """A table cell; numbers carry their exact value in ``data-value``."""
    text = html.escape(format_number(value))
    if isinstance(value, (int, float)) and not isinstance(value, bool) and text != "-":
        return f'<td class="num" data-value="{value!r}">{text}</td>'
    return f"<td>{text}</td>"


def table(
    table_id: str,
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    flagged: Sequence[bool] | None = None,
) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = ' class="flagged"' if flagged is not None and flagged[i] else ""
        body.append(f"<tr{cls}>" + "".join(_cell(v) for v in row) + "</tr>")
    return (
        f'<table id="{html.escape(table_id)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def image(data: bytes | None, alt: str, missing: str) -> str:
    if data is None:
        return f'<p class="note">{html.escape(missing)}</p>'
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def run_figure(run: Run, name: str | None, alt: str) -> str:
    """The figure ``name`` of the run's directory, embedded."""
    if name is None:
        return f'<p class="note">No figure: {html.escape(alt)}.</p>'
    path = run.directory / name
    data = path.read_bytes() if path.is_file() else None
    return image(data, alt, f"The figure {name} is missing from {run.directory}.")
