"""Simulating a round on Dask, and adding its valid simulations to the training data."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sbi_rounds.errors import InvalidRoundError
from sbi_rounds.run import Run
from sbi_rounds.simulation import simulate_round
from sbi_rounds.stage import Stopped, stage
from sbi_rounds.stages.start import commit_imported, is_imported
from sbi_rounds.store import SIMULATIONS, Stage

__all__ = ["MIN_VALID_ROWS", "append_simulations", "simulate", "valid_rows_needed"]

log = logging.getLogger(__name__)


@stage("simulate", Stage.SIMULATED)
def simulate(
    run: Run,
    round_: int,
    client: Any,
    progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any] | Stopped:
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
        return commit_imported(run, round_)
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
    return {
        "chunks_run": report.chunks_run,
        "chunks_skipped": report.chunks_skipped,
        "simulations_run": report.simulations_run,
        "retries": report.retries,
    }


#: Valid rows a round needs whatever ``min_valid_fraction`` says: training splits off at
#: least one validation row, and a round without rows breaks sbi's proposal weighting.
MIN_VALID_ROWS = 2


def valid_rows_needed(n: int, min_valid_fraction: float) -> int:
    """Valid rows of ``n`` a round needs to be trained on (at least ``MIN_VALID_ROWS``)."""
    return max(MIN_VALID_ROWS, math.ceil(n * min_valid_fraction - 1e-9))


@stage("append", Stage.APPENDED)
def append_simulations(run: Run, round_: int) -> dict[str, Any]:
    """Count valid simulations, enforce ``min_valid_fraction`` and add the round to training.

    Invalid rows (NaN or infinite summaries) stay in the file, marked, and are left out of
    training.
    """
    store, cfg = run.store, run.config
    _, _, valid = store.read_simulations(round_)
    n, n_valid = len(valid), int(valid.sum())
    store.set_counts(round_, n, n_valid)
    needed = valid_rows_needed(n, cfg.cluster.min_valid_fraction)
    if n_valid < needed:
        raise InvalidRoundError(
            f"round {round_}: only {n_valid} of {n} simulations are valid (finite); at least "
            f"{needed} are needed (cluster.min_valid_fraction={cfg.cluster.min_valid_fraction}"
            f", and never fewer than {MIN_VALID_ROWS}). The invalid rows are kept in "
            f"{store.path} (rounds/{round_:04d}/valid). Fix the simulator or the prior, then "
            "rerun the same command with --resimulate-invalid to simulate the invalid rows "
            "again (or lower --min-valid-fraction to train on the valid ones)."
        )
    if n_valid < n:
        log.warning(
            "round %d: %d of %d simulations are invalid and left out of training",
            round_,
            n - n_valid,
            n,
        )
    chunk_seconds = store.chunk_seconds(round_)
    info = store.round_info(round_)
    per_sim = float(np.nansum(chunk_seconds) / info.num_simulations)
    store.write_seconds_per_simulation(round_, per_sim, seal_datasets=SIMULATIONS)
    return {"simulations": n, "valid": n_valid}
