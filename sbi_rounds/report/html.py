"""The run report's HTML building blocks: style, number format, tables, embedded figures."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from typing import Any

from sbi_rounds.lifecycle.run import Run
from sbi_rounds.missing import is_missing

__all__ = ["CSS", "format_number", "image", "run_figure", "table"]

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 78em; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table#rounds { font-size: 0.8em; } #rounds th, #rounds td { padding: 0.2em 0.35em; }
.wide { overflow-x: auto; }
th { background: #f2f2f2; } tr.flagged td { background: #fde2e2; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; } .stop { background: #fff4d6; padding: 0.5em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def format_number(value: Any, decimals: int | None = None) -> str:
    """How the report shows a value: ``-`` for missing, floats with 4 significant digits or
    with ``decimals`` decimals."""
    if is_missing(value):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return "-" if value == -1 else str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if decimals is None else f"{value:.{decimals}f}"
    return str(value)


def _cell(value: Any, decimals: int | None = None) -> str:
    """A table cell; numbers carry their exact value in ``data-value``."""
    text = html.escape(format_number(value, decimals))
    if isinstance(value, (int, float)) and not isinstance(value, bool) and text != "-":
        return f'<td class="num" data-value="{value!r}">{text}</td>'
    return f"<td>{text}</td>"


def _head(header: Sequence[str], groups: Sequence[str | None] | None) -> str:
    """The header row, or two rows where consecutive columns share a group title."""
    if groups is None or not any(groups):
        return "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    top, below, i = [], [], 0
    while i < len(header):
        group = groups[i]
        if group is None:
            top.append(f'<th rowspan="2">{html.escape(header[i])}</th>')
            i += 1
            continue
        span = 1
        while i + span < len(header) and groups[i + span] == group:
            span += 1
        top.append(f'<th colspan="{span}">{html.escape(group)}</th>')
        below.extend(f"<th>{html.escape(h)}</th>" for h in header[i : i + span])
        i += span
    return f"<tr>{''.join(top)}</tr><tr>{''.join(below)}</tr>"


def table(
    table_id: str,
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    flagged: Sequence[bool] | None = None,
    *,
    groups: Sequence[str | None] | None = None,
    decimals: Sequence[int | None] | None = None,
) -> str:
    """An HTML table with one cell per value of each row.

    Args:
        groups: Per column, a title that consecutive columns share in a header row above
            theirs (e.g. ``seconds`` over ``train``, ``checks``); None: no group.
        decimals: Per column, the decimals its floats show; None: 4 significant digits.
    """
    places = list(decimals) if decimals is not None else [None] * len(header)
    body = []
    for i, row in enumerate(rows):
        cls = ' class="flagged"' if flagged is not None and flagged[i] else ""
        cells = "".join(_cell(v, d) for v, d in zip(row, places, strict=True))
        body.append(f"<tr{cls}>{cells}</tr>")
    return (
        f'<div class="wide"><table id="{html.escape(table_id)}">'
        f"<thead>{_head(header, groups)}</thead><tbody>{''.join(body)}</tbody></table></div>"
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
