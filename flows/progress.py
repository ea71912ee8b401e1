"""Progress of a round's simulation: a terminal bar and a Prefect progress artifact."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger

from flows.artifacts import SimulationProgress
from sbi_rounds.run import Run

__all__ = ["simulation_progress"]

ProgressFn = Callable[[int, int, float], None]


def _simulation_progress(
    round_: int, enabled: bool
) -> tuple[ProgressFn | None, Callable[[], None]]:
    if not enabled:
        return None, lambda: None
    from tqdm.auto import tqdm

    bar: dict[str, Any] = {}

    def update(done: int, total: int, rate: float) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(
                total=total, desc=f"simulating round {round_}", unit="sim", dynamic_ncols=True
            )
        b = bar["bar"]
        b.update(done - b.n)
        b.set_postfix(sims_per_s=f"{rate:.0f}", refresh=True)

    def close() -> None:
        if "bar" in bar:
            bar["bar"].close()

    return update, close


def _fan_out(*callbacks: ProgressFn | None) -> ProgressFn:
    """One progress callback that calls every given one."""
    active = [c for c in callbacks if c is not None]

    def progress(done: int, total: int, rate: float) -> None:
        for callback in active:
            callback(done, total, rate)

    return progress


def simulation_progress(show_bar: bool) -> Callable[[Run, int], Any]:
    """A ``run_round`` progress factory: the round's progress artifact, and a bar if asked.

    Args:
        show_bar: Show a terminal progress bar too.
    """

    @contextmanager
    def progress(run: Run, round_: int) -> Iterator[ProgressFn]:
        info = run.store.round_info(round_)
        pending = run.store.pending_chunks(round_)
        missing = sum(b - a for a, b in map(info.chunk_bounds, pending))
        artifact = SimulationProgress(
            get_run_logger(),
            run.config.resolved_run_id,
            round_,
            run.config.rounds,
            done=info.num_simulations - missing,
            total=info.num_simulations,
        )
        bar, close = _simulation_progress(round_, show_bar)
        try:
            yield _fan_out(bar, artifact)
        finally:
            close()

    return progress
