"""What every round stage shares: its result, and the decorator that skips, times and commits.

A stage body does the work of one stage of one round and returns what it did (a frozen
record its module defines: ``Simulated``, ``Trained``, ...); :func:`stage` wraps it: the
stage is skipped when the run file shows the round past it, its wall time and the time its
commits took are recorded in the round's timings, and the round's stage mark is committed
last, so a round marked at a stage has its timings too.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Concatenate, Generic, ParamSpec, TypeVar

from sbi_rounds.errors import RunInterrupted
from sbi_rounds.store import Stage

if TYPE_CHECKING:
    from sbi_rounds.lifecycle.run import Run

__all__ = ["StageResult", "Stopped", "stage"]

P = ParamSpec("P")
#: What a stage reports it did (its module's record).
D = TypeVar("D")


@dataclass(frozen=True, kw_only=True)
class StageResult(Generic[D]):
    """What a stage did.

    Attributes:
        round: The round, 1-based.
        stage: The stage's name.
        skipped: Whether the run file showed the round past the stage (nothing done).
        seconds: The stage's wall time (0 when skipped).
        details: The stage's own record of what it did (e.g. ``stages.Simulated``); None
            when skipped.
    """

    round: int
    stage: str
    skipped: bool
    seconds: float
    details: D | None = None


@dataclass(frozen=True)
class Stopped:
    """A stage body's answer when it stopped at a safe point, its work so far committed.

    The stage's time is recorded, the round keeps its stage mark, and
    :class:`~sbi_rounds.errors.RunInterrupted` is raised with ``reason``.
    """

    reason: str


StageBody = Callable[Concatenate["Run", int, P], "D | Stopped"]


def stage(
    name: str, reaches: Stage
) -> Callable[[StageBody[P, D]], Callable[Concatenate[Run, int, P], StageResult[D]]]:
    """Make ``body(run, round_, ...)`` a round stage called ``name`` that reaches ``reaches``.

    The stage is skipped (``StageResult.skipped``) when the round reached ``reaches``
    before. Otherwise the body runs; then its seconds and the seconds its commits took are
    added to the round's timings (``name`` and ``commit``), and ``reaches`` is committed.
    A body that returns :class:`Stopped` has its time recorded but reaches nothing.
    """

    def wrap(body: StageBody[P, D]) -> Callable[Concatenate[Run, int, P], StageResult[D]]:
        @functools.wraps(body)
        def run_stage(run: Run, round_: int, *args: P.args, **kwargs: P.kwargs) -> StageResult[D]:
            store = run.store
            reached = store.stage(round_)
            if reached is not None and reached >= reaches:
                return StageResult(round=round_, stage=name, skipped=True, seconds=0.0)
            t0, c0 = time.perf_counter(), store.commit_seconds
            outcome = body(run, round_, *args, **kwargs)
            seconds = time.perf_counter() - t0
            store.record_timing(round_, name, seconds)
            store.record_timing(round_, "commit", store.commit_seconds - c0)
            if isinstance(outcome, Stopped):
                raise RunInterrupted(outcome.reason)
            store.set_stage(round_, reaches)
            return StageResult(
                round=round_, stage=name, skipped=False, seconds=seconds, details=outcome
            )

        return run_stage

    return wrap
