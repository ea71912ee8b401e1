"""Trackers without a package: lines in the log (DEBUG), on stdout, and nothing at all."""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import IO, Any

from sbi_rounds.training.trackers.base import BaseTracker, figure_path

__all__ = ["LogTracker", "NullTracker", "StdoutTracker"]


def _format_number(value: float, precision: int) -> str:
    return f"{value:.{precision}g}" if math.isfinite(value) else str(value)


class StdoutTracker(BaseTracker):
    """Prints one terse line per call, e.g. ``[run-1] step=3 train_loss=1.234 val_loss=1.3``.

    Args:
        stream: Where lines go; None writes to the current ``sys.stdout`` at each call.
        prefix: Shown in brackets at the start of every line (the run name); empty: none.
        figure_dir: Figures are saved there as PNG files (``round/posterior`` at step 3
            becomes ``figure_dir/round/posterior_step3.png``); None prints that the figure
            was not saved.
        precision: Significant digits of the printed numbers.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        prefix: str = "",
        figure_dir: str | os.PathLike[str] | None = None,
        precision: int = 4,
    ) -> None:
        super().__init__()
        if not isinstance(precision, int) or precision < 1:
            raise ValueError(f"precision must be an integer >= 1, got {precision!r}")
        self._stream = stream
        self._prefix = f"[{prefix}] " if prefix else ""
        self._figure_dir = None if figure_dir is None else Path(figure_dir)
        self._precision = precision

    @property
    def log_dir(self) -> str | None:
        """The figure directory, or None."""
        return None if self._figure_dir is None else str(self._figure_dir)

    def _print(self, text: str) -> None:
        stream = sys.stdout if self._stream is None else self._stream
        print(f"{self._prefix}{text}", file=stream)

    def _write_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        fields = " ".join(f"{k}={_format_number(v, self._precision)}" for k, v in metrics.items())
        self._print(fields if step is None else f"step={step} {fields}")

    def _write_params(self, params: dict[str, Any]) -> None:
        self._print("params " + " ".join(f"{k}={v}" for k, v in params.items()))

    def _write_figure(self, name: str, figure: Any, step: int | None) -> None:
        where = "" if step is None else f" step={step}"
        if self._figure_dir is None:
            self._print(f"figure {name}{where} not saved (StdoutTracker has no figure_dir)")
            return
        path = self._figure_dir / figure_path(name, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png")
        self._print(f"figure {name}{where} -> {path}")

    def _flush(self) -> None:
        stream = sys.stdout if self._stream is None else self._stream
        stream.flush()


class LogTracker(StdoutTracker):
    """The lines of :class:`StdoutTracker` as DEBUG records of the ``sbi_rounds.metrics``
    logger: per-epoch metrics stay out of a run's console and INFO logs (``-vv`` shows
    them), and the run file keeps every epoch's losses anyway.

    Args:
        prefix: Shown in brackets at the start of every line (the run name); empty: none.
        figure_dir: Where figures are saved as PNG files (None: not saved).
        precision: Significant digits of the logged numbers.
    """

    def __init__(
        self,
        *,
        prefix: str = "",
        figure_dir: str | os.PathLike[str] | None = None,
        precision: int = 4,
    ) -> None:
        super().__init__(prefix=prefix, figure_dir=figure_dir, precision=precision)
        self._logger = logging.getLogger("sbi_rounds.metrics")

    def _print(self, text: str) -> None:
        self._logger.debug("%s%s", self._prefix, text)

    def _flush(self) -> None:
        pass


class NullTracker(BaseTracker):
    """Checks its input like the others and discards it (backend ``none``)."""

    def _write_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        pass

    def _write_params(self, params: dict[str, Any]) -> None:
        pass

    def _write_figure(self, name: str, figure: Any, step: int | None) -> None:
        pass
