"""Our top-level packages ``flows`` and ``tasks``, found whatever the working directory holds."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

__all__ = ["OWN_PACKAGES", "ROOT", "pin_own_packages"]

#: The directory holding ``sbi_rounds``, ``flows`` and ``tasks`` (site-packages, or the
#: checkout of an editable install).
ROOT = Path(__file__).resolve().parents[2]
#: Our top-level packages with common names: a project with its own ``tasks.py`` (invoke,
#: Celery) or ``flows/`` in the working directory would shadow them on ``sys.path``.
OWN_PACKAGES = ("flows", "tasks")


class _OwnPackages(importlib.abc.MetaPathFinder):
    """Finds ``flows`` and ``tasks`` in :data:`ROOT` before ``sys.path`` is searched."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname not in OWN_PACKAGES:
            return None  # submodules are found through their package's __path__
        return importlib.machinery.PathFinder.find_spec(fullname, [str(ROOT)])


def pin_own_packages() -> None:
    """Make ``import flows`` and ``import tasks`` find sbi-rounds' own packages (idempotent).

    Other modules of the working directory (a simulator, say) still import as usual.
    """
    if not any(isinstance(f, _OwnPackages) for f in sys.meta_path):
        sys.meta_path.insert(0, _OwnPackages())
