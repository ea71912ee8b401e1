"""MkDocs hooks: the "Benchmarks" page, the settings table, Sphinx roles shown as code.

The benchmarks' narrative and figures stay in one file beside the scripts that measure them
(``benchmarks/README.md``); the site renders that file as ``benchmarks.md``. Its links to
files of the repository (raw results, scripts) are not pages of the site, so they become
plain code names. The settings page's table (``<!-- settings -->``) is written from the
settings model itself, as the command line's flags are. The docstrings name other objects
with Sphinx roles
(``:func:`run_round```); the API pages show the name as code, without the role.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

__all__ = ["on_files", "on_page_content", "on_page_markdown"]

ROOT = Path(__file__).resolve().parent.parent
_SETTINGS = "<!-- settings -->"
_ROLE = re.compile(r":(?:func|meth|class|mod|data|attr|exc|obj):\s*(?=<code)")
_LINK = re.compile(r"\[([^\]]+)\]\((?!https?://|#)([^)]+)\)")


def _repository_links_as_names(text: str) -> str:
    """``[`x.json`](results/x.json)`` -> ``x.json` (`benchmarks/results/x.json`)``."""
    return _LINK.sub(lambda m: f"{m.group(1)} (`benchmarks/{m.group(2)}`)", text)


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:  # noqa: ARG001
    """Add the generated ``benchmarks.md`` page to the site's files."""
    text = (ROOT / "benchmarks" / "README.md").read_text()
    files.append(File.generated(config, "benchmarks.md", content=_repository_links_as_names(text)))
    return files


def on_page_content(html: str, **kwargs: Any) -> str:  # noqa: ARG001
    """``:func: <code>x</code>`` (a Sphinx role rendered as Markdown) -> ``<code>x</code>``."""
    return _ROLE.sub("", html)


def _settings_table() -> str:
    """One table per section of ``RunConfig``: flag, default and description of each setting."""
    from sbi_rounds.config import RunConfig
    from sbi_rounds.config.fields import format_value, settings_of

    sections: dict[str, list[str]] = {}  # in the order each section first appears
    for setting in settings_of(RunConfig):
        flag = "--" + ".".join(p.replace("_", "-") for p in setting.path)
        default = "(required)" if setting.required else f"`{format_value(setting.default)}`"
        text = setting.field.description or setting.field.title or ""
        text = text.replace("<", "&lt;").replace(">", "&gt;")  # `<run-dir>` is no HTML tag
        cells = [f"`{flag}`", default, text]
        row = "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
        sections.setdefault(setting.section, []).append(row)
    out: list[str] = []
    for section, rows in sections.items():
        out += ["", f"### {section}", "", "| flag | default | what |", "| --- | --- | --- |", *rows]
    return "\n".join(out) + "\n"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:  # noqa: ARG001
    """Replace ``<!-- settings -->`` by the table of every setting."""
    if _SETTINGS in markdown:
        markdown = markdown.replace(_SETTINGS, _settings_table())
    return markdown
