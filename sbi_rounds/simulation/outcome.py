"""How one call of ``simulate_round`` ends: its report, or the chunk that kept failing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SimulationFailed", "SimulationReport", "one_line"]


@dataclass(frozen=True, kw_only=True)
class SimulationReport:
    """What one call of :func:`simulate_round` did.

    Attributes:
        chunks_run: Chunks simulated and committed by this call.
        chunks_skipped: Chunks found committed already (by an earlier session).
        simulations_run: Simulations in ``chunks_run``.
        seconds: Wall time of the call.
        retries: Resubmissions after an error, a lost worker or a timeout.
        stopped: True when ``should_stop`` ended the call early.
        chunks_by_worker: Committed chunks per ``"host:pid"`` of the worker that ran them.
        tasks: Dask tasks sent: one per chunk, fewer where fast chunks went several to a task.
    """

    chunks_run: int
    chunks_skipped: int
    simulations_run: int
    seconds: float
    retries: int
    stopped: bool
    chunks_by_worker: dict[str, int] = field(default_factory=dict)
    tasks: int = 0


class SimulationFailed(RuntimeError):
    """A chunk kept failing after its retries; its parameters were saved in the run file.

    ``str(e)`` has the simulator's whole error (with its traceback); ``e.summary`` says the
    same in one line, with the first line of the simulator's error.
    """

    def __init__(self, message: str, round_: int, chunk: int, summary: str | None = None) -> None:
        super().__init__(message)
        self.round, self.chunk = round_, chunk
        self.summary = message if summary is None else summary

    @classmethod
    def out_of_retries(
        cls, path: Path, round_: int, chunk: int, rows: tuple[int, int], attempts: int, error: str
    ) -> SimulationFailed:
        """The error of ``chunk`` (rows ``[a, b)``) failed ``attempts`` times, last with
        ``error``, its parameters saved in the run file at ``path``."""
        a, b = rows
        what = f"round {round_}, chunk {chunk} (rows {a}-{b - 1}) failed {attempts} time"
        what += "s" if attempts > 1 else ""
        where = f"{path} under rounds/{round_:04d}/failures/{chunk}"
        return cls(
            f"{what}; its parameters and the last error are saved in {where}. Last error:\n{error}",
            round_,
            chunk,
            summary=f"{what}: {one_line(error)} (its parameters and the whole error are "
            f"saved in {where}; -v prints it)",
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.round, self.chunk, self.summary)


def one_line(message: str) -> str:
    """A chunk's error in one line: its first line and, for an external program, the last
    line of what it wrote to standard error (where programs put their error)."""
    if not message.strip():
        return "no error message"
    first, _, rest = message.partition("\n")
    _, found, stderr = rest.partition("stderr:\n")
    said = [line.strip() for line in stderr.splitlines() if line.strip()] if found else []
    return f"{first}: {said[-1]}" if said else first
