"""Finished chunks of a round committed together, and the report of a round's simulation."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ChunkCommits", "SimulationReport"]


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
        tasks: Dask tasks sent: one per chunk, fewer where fast chunks went several to a
            task (:data:`TASK_SECONDS`).
    """

    chunks_run: int
    chunks_skipped: int
    simulations_run: int
    seconds: float
    retries: int
    stopped: bool
    chunks_by_worker: dict[str, int] = field(default_factory=dict)
    tasks: int = 0


class ChunkCommits:
    """Finished chunks of a round, committed together at most every ``commit_interval``.

    Counts what it committed, and reports progress after each commit. ``dispatch`` is the
    round's dispatch state (``simulation.dispatch``): its chunk layout, pending chunks and
    counters.
    """

    def __init__(
        self,
        store: Any,
        dispatch: Any,
        progress: Callable[[int, int, float], None] | None,
    ) -> None:
        self.t_start = time.perf_counter()
        self.store, self.dispatch, self.progress = store, dispatch, progress
        info = dispatch.info
        self.total = info.num_simulations
        self.done = self.total - sum(
            info.chunk_bounds(c)[1] - info.chunk_bounds(c)[0] for c in dispatch.pending
        )
        self.run_sims = self.chunks_run = 0
        self.finished: list[tuple[int, np.ndarray, float, str]] = []
        self.last = -math.inf

    def report(self, stopped: bool) -> SimulationReport:
        """What the round's simulation did."""
        d = self.dispatch
        return SimulationReport(
            chunks_run=self.chunks_run,
            chunks_skipped=d.info.num_chunks - len(d.pending),
            simulations_run=self.run_sims,
            seconds=time.perf_counter() - self.t_start,
            retries=d.retries,
            stopped=stopped,
            chunks_by_worker=dict(d.by_worker),
            tasks=d.tasks,
        )

    def commit(self, one_by_one: bool = False) -> None:
        """Commit the finished chunks in one write (none: nothing); ``one_by_one``
        (``commit_interval=0``): one write per chunk, also for chunks finished together."""
        if one_by_one:
            batch, self.finished = self.finished, []
            for item in batch:
                self.finished.append(item)
                self.commit()
            return
        if not self.finished:
            return
        batch = self.finished.copy()
        d = self.dispatch
        self.store.write_chunks(d.round, [(chunk, x, seconds) for chunk, x, seconds, _ in batch])
        self.finished.clear()
        self.last = time.perf_counter()
        for chunk, _, _, where in batch:
            a, b = d.info.chunk_bounds(chunk)
            self.done += b - a
            self.run_sims += b - a
            self.chunks_run += 1
            d.by_worker[where] = d.by_worker.get(where, 0) + 1
        if self.progress is not None:
            elapsed = self.last - self.t_start
            rate = self.run_sims / elapsed if elapsed > 0 else 0.0
            self.progress(self.done, self.total, rate)
