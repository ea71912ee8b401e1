"""Where a command looks for user code: the working directory, after sbi-rounds' packages.

``python -m flows.online`` starts with the working directory first on ``sys.path``, and the
installed ``sbi-rounds`` command without it. A project directory often holds a ``tasks.py``
(invoke, Celery) or a ``flows/`` of its own, which, first on the path, would be imported in
place of ours. Every command therefore puts the working directory last: the user's modules
(a simulator, a prior) still import from it, but never in place of ``flows``, ``tasks`` or
``sbi_rounds``. The library itself never changes ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import os
import sys

__all__ = ["working_directory_last"]


def working_directory_last() -> None:
    """Move the working directory (``''`` or its path, first as Python put it) to the end of
    ``sys.path``, or add it there (idempotent)."""
    cwd = os.getcwd()
    if sys.path and sys.path[0] in ("", cwd):
        del sys.path[0]
    _own_packages_before_it()
    if cwd not in sys.path:
        sys.path.append(cwd)


def _own_packages_before_it() -> None:
    """Put the folder holding our ``tasks`` and ``flows`` on ``sys.path`` (before the working
    directory is added): an editable install's finder comes after Python's path search, so a
    project's ``tasks.py`` anywhere on the path would otherwise be found first. For a regular
    install the folder is site-packages, already there."""
    spec = importlib.util.find_spec("tasks")
    if spec is None or spec.origin is None:
        return
    root = os.path.dirname(os.path.dirname(spec.origin))
    if root not in sys.path:
        sys.path.append(root)
