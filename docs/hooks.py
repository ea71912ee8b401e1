"""MkDocs hooks: the "Benchmarks" page, and Sphinx roles in docstrings shown as code.

The benchmarks' narrative and figures stay in one file beside the scripts that measure them
(``benchmarks/README.md``); the site renders that file as ``benchmarks.md``. Its links to
files of the repository (raw results, scripts) are not pages of the site, so they become
plain code names. The docstrings name other objects with Sphinx roles
(``:func:`run_round```); the API pages show the name as code, without the role.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

__all__ = ["on_files", "on_page_content"]

ROOT = Path(__file__).resolve().parent.parent
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
