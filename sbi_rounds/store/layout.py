"""The run directory's layout: where the run file, its round files, the checks' simulations,
the report, its figures and the lock go.

A run directory written by this version::

    <run-id>/
        run.h5            the run file (settings, stages, networks, records, checksums)
        run.lock          the writer's lock
        rounds/           run.round-NNNN.h5, run.round-NNNN.x.h5: each round's data
        checks/           diagnostics.h5 and its round files: the checks' simulations
        report/           report.html
            figures/      round_NNN_pairplot.png, round_NNN_predictive.png, calibration_*.png

Runs written before it keep everything side by side in the directory (:attr:`RunLayout.flat`);
they are read, resumed and reported in that layout, so a run keeps one layout all its life.
Readers never need the layout to find data: the run file links its round files by their
paths relative to it, and its records name their figures relative to the directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["BULK_FOLDER", "RunLayout"]

#: The folder beside a run file that holds its round files (format 2, this layout).
BULK_FOLDER = "rounds"

_RUN_FILE = "run.h5"
_LOCK_FILE = "run.lock"
_REPORT_FILE = "report.html"
_CHECKS_FILE = "diagnostics.h5"


@dataclass(frozen=True)
class RunLayout:
    """Where each file of one run directory goes.

    Attributes:
        directory: The run's directory, ``<run-dir>/<run-id>``.
        flat: A run written before the folders (everything side by side in ``directory``).
    """

    directory: Path
    flat: bool = False

    @classmethod
    def of(cls, directory: str | Path) -> RunLayout:
        """The layout of the run in ``directory``: flat when files of the flat layout are at
        its top (a report, the checks' file, a round file or a figure), else this version's
        (a new run's too)."""
        directory = Path(directory)
        top = (_REPORT_FILE, _CHECKS_FILE)
        flat = any((directory / name).exists() for name in top) or any(
            next(directory.glob(pattern), None) is not None
            for pattern in ("run.round-*", "round_*.png", "calibration_*.png")
        )
        return cls(directory, flat=flat)

    @classmethod
    def of_run_file(cls, path: str | Path) -> RunLayout:
        """The layout of the run whose run file is ``path`` (or its directory)."""
        path = Path(path)
        return cls.of(path if path.is_dir() else path.parent)

    @property
    def run_file(self) -> Path:
        """The run file, ``run.h5``: the single source of truth."""
        return self.directory / _RUN_FILE

    @property
    def lock(self) -> Path:
        """The writer's lock file, ``run.lock``."""
        return self.directory / _LOCK_FILE

    @property
    def bulk_folder(self) -> str:
        """The folder, relative to the run file, of the round files of rounds planned from now
        on (``""``: beside it)."""
        return "" if self.flat else BULK_FOLDER

    @property
    def checks_file(self) -> Path:
        """The file of the checks' simulations, ``diagnostics.h5`` (deletable); its round
        files lie beside it."""
        return self.directory / ("" if self.flat else "checks") / _CHECKS_FILE

    @property
    def report(self) -> Path:
        """The run's HTML report, ``report.html``."""
        return self.directory / ("" if self.flat else "report") / _REPORT_FILE

    @property
    def figures(self) -> Path:
        """The folder of the figures the rounds and checks draw."""
        return self.directory if self.flat else self.directory / "report" / "figures"

    def figure(self, name: str) -> Path:
        """The path of the figure ``name`` (``round_001_pairplot.png``)."""
        return self.figures / name

    def relative(self, path: Path) -> str:
        """``path`` relative to the run directory, as records name their figures."""
        return path.relative_to(self.directory).as_posix()
