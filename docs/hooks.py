"""MkDocs hook: show ``benchmarks/README.md`` as the site's "Benchmarks" page.

The benchmarks' narrative and figures stay in one file beside the scripts that measure them;
the site renders that file as ``benchmarks.md``. Its links to files of the repository (raw
results, scripts) are not pages of the site, so they become plain code names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

__all__ = ["on_files"]

ROOT = Path(__file__).resolve().parent.parent
_LINK = re.compile(r"\[([^\]]+)\]\((?!https?://|#)([^)]+)\)")


def _repository_links_as_names(text: str) -> str:
    """``[`x.json`](results/x.json)`` -> ``x.json` (`benchmarks/results/x.json`)``."""
    return _LINK.sub(lambda m: f"{m.group(1)} (`benchmarks/{m.group(2)}`)", text)


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:  # noqa: ARG001
    """Add the generated ``benchmarks.md`` page to the site's files."""
    text = (ROOT / "benchmarks" / "README.md").read_text()
    files.append(File.generated(config, "benchmarks.md", content=_repository_links_as_names(text)))
    return files
