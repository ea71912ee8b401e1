"""Simulating a round on Dask, and adding its valid simulations to the training data.

Both stages tell a chunk's story through ``simulation.ledger`` (dispatch, retry, commit,
validity); they add only what makes them stages (a stop, the stored speed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sbi_rounds.lifecycle.run import Run
from sbi_rounds.lifecycle.stage import Stopped, stage
from sbi_rounds.simulation import count_valid, simulate_round
from sbi_rounds.simulation.imported import commit_imported, is_imported
from sbi_rounds.store import SIMULATIONS, Stage

__all__ = ["Appended", "Simulated", "append_simulations", "simulate"]


@dataclass(frozen=True, kw_only=True)
class Simulated:
    """What the simulate stage did.

    Attributes:
        chunks_run: Chunks simulated now.
        chunks_skipped: Chunks committed before (a resumed round), not run again.
        simulations_run: Simulations of the chunks run now.
        retries: Chunk retries after a failure.
        imported: Rows of a round imported from simulations you have (``start_from``).
    """

    chunks_run: int
    chunks_skipped: int
    simulations_run: int
    retries: int
    imported: int = 0


@dataclass(frozen=True, kw_only=True)
class Appended:
    """What the append stage counted: the round's ``simulations`` and the ``valid`` ones."""

    simulations: int
    valid: int


@stage("simulate", Stage.SIMULATED)
def simulate(
    run: Run,
    round_: int,
    client: Any,
    progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Simulated | Stopped:
    """Simulate the round's uncommitted chunks on Dask (see ``simulate_round``).

    Args:
        run: The open run.
        round_: A sampled round.
        client: A ``distributed.Client``.
        progress: ``progress(done, total, rate)`` after each commit.
        should_stop: Polled while simulating; True stops after committing what finished
            and raises ``RunInterrupted``.
    """
    store, cfg = run.store, run.config
    if is_imported(store.round_info(round_).proposal):  # simulations you have: committed
        imported = commit_imported(run, round_)
        return Simulated(
            chunks_run=0, chunks_skipped=0, simulations_run=0, retries=0, imported=imported
        )
    with store.held_open():  # one open file for the round's many chunk commits
        report = simulate_round(
            store,
            round_,
            simulator=cfg.simulator,
            cluster=cfg.cluster,
            client=client,
            run_seed=cfg.seed,
            progress=progress,
            should_stop=should_stop,
        )
    if report.stopped:
        return Stopped(f"stopped while simulating round {round_}")
    return Simulated(
        chunks_run=report.chunks_run,
        chunks_skipped=report.chunks_skipped,
        simulations_run=report.simulations_run,
        retries=report.retries,
    )


@stage("append", Stage.APPENDED)
def append_simulations(run: Run, round_: int) -> Appended:
    """Count valid simulations, enforce ``min_valid_fraction`` and add the round to training.

    Invalid rows (NaN or infinite summaries) stay in the file, marked, and are left out of
    training.
    """
    store, cfg = run.store, run.config
    n, n_valid = count_valid(store, round_, cfg.cluster.min_valid_fraction)
    chunk_seconds = store.chunk_seconds(round_)
    info = store.round_info(round_)
    per_sim = float(np.nansum(chunk_seconds) / info.num_simulations)
    store.write_seconds_per_simulation(round_, per_sim, seal_datasets=SIMULATIONS)
    return Appended(simulations=n, valid=n_valid)
