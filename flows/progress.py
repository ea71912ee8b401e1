"""Progress of a run in the flow: the view that shows it, and the simulation's artifact."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger

from flows.artifacts import SimulationProgress
from sbi_rounds.lifecycle.run import Run
from sbi_rounds.runtime.progress import PeriodicLines, ProgressView, SimulationInfo, current_view
from sbi_rounds.simulation import committed_rows

__all__ = ["progress_view", "simulation_progress"]

ProgressFn = Callable[[int, int, float], None]


def progress_view(run: Run) -> ProgressView:
    """The view the command line set (its live display), else progress lines in the run's
    log every ``console.progress_interval`` seconds (batch jobs, Prefect workers)."""
    view = current_view()
    if view is not None:
        return view
    return PeriodicLines(get_run_logger(), run.config.console.progress_interval, run.config.rounds)


def simulation_progress(view: ProgressView) -> Callable[[Run, int], Any]:
    """A ``run_round`` progress factory: the round's progress artifact, and ``view``."""

    @contextmanager
    def progress(run: Run, round_: int) -> Iterator[ProgressFn]:
        info = run.store.round_info(round_)
        done = committed_rows(run.store, round_)
        artifact = SimulationProgress(
            get_run_logger(),
            run.config.resolved_run_id,
            round_,
            run.config.rounds,
            done=done,
            total=info.num_simulations,
        )
        view.simulated(SimulationInfo(done, info.num_simulations, 0.0))

        def report(done: int, total: int, rate: float) -> None:
            artifact(done, total, rate)
            view.simulated(SimulationInfo(done, total, rate))

        yield report

    return progress
