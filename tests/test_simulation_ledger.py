"""A chunk's life in the ledger: plan, resume, grouping, retry, commit, validity (no Dask)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from sbi_rounds.config import ClusterConfig
from sbi_rounds.errors import InvalidRoundError
from sbi_rounds.seeding import derive_seed
from sbi_rounds.simulation import (
    ChunkState,
    Ledger,
    committed_rows,
    count_valid,
    plan_round,
    reopen_invalid,
)
from sbi_rounds.simulation.ledger import measured_speed
from sbi_rounds.store import RunStore, Stage


def _store(tmp_path: Path, n: int = 10, chunk_size: int = 3) -> RunStore:
    """A real run file with round 1 planned through the ledger and its parameters drawn."""
    store = RunStore.create(tmp_path / f"run-{time.time_ns()}.h5", config={}, fingerprint="t")
    plan_round(
        store,
        1,
        cluster=ClusterConfig(chunk_size=chunk_size),
        num_simulations=n,
        theta_dim=2,
        x_dim=2,
        num_posterior_samples=4,
        proposal={"kind": "test"},
    )
    store.write_theta(1, 0, np.random.default_rng(0).uniform(-1, 1, (n, 2)))
    return store


def test_planning_chooses_the_chunk_size_once(tmp_path):
    store = _store(tmp_path, n=10, chunk_size=3)
    info = store.round_info(1)
    assert (info.chunk_size, info.num_chunks, info.chunk_bounds(3)) == (3, 4, (9, 10))
    measure = ClusterConfig(chunk_size="measure")
    assert measured_speed(store, 1, ClusterConfig(), lambda: 1.0) is None
    assert measured_speed(store, 1, measure, lambda: 0.25) == 0.25  # round 1: the probe
    # measure without a speed (the checks' sets before any round was timed) plans as auto
    plan_round(
        store,
        2,
        cluster=measure,
        num_simulations=640,
        theta_dim=2,
        x_dim=2,
        num_posterior_samples=1,
        proposal={"kind": "test"},
    )
    assert store.round_info(2).chunk_size == 10


def test_a_resumed_ledger_queues_only_what_is_not_committed(tmp_path):
    store = _store(tmp_path)
    store.write_chunk(1, 1, np.zeros((3, 2)), 0.5)
    ledger = Ledger.open(store, 1, run_seed=7)
    states = [e.state for e in ledger.entries.values()]
    assert states == [ChunkState.QUEUED, ChunkState.EARLIER, ChunkState.QUEUED, ChunkState.QUEUED]
    assert ledger.entries[2].seed == derive_seed(7, 1, "simulate", 2)
    assert committed_rows(store, 1) == 3 and ledger.rows_done == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        ledger.entries[0].state = ChunkState.COMMITTED  # type: ignore[misc]
    with pytest.raises(TypeError):
        ledger.entries[0] = ledger.entries[1]  # type: ignore[index]


def test_a_failed_group_goes_back_alone_and_only_alone_sends_count_attempts(tmp_path):
    ledger = Ledger.open(_store(tmp_path, n=12, chunk_size=3), 1, run_seed=0)
    group = ledger.next_group(lambda: 3)
    assert group == [0, 1, 2]  # neighbours, up to the size asked
    sent = ledger.running(group)
    assert [e.attempts for e in sent] == [0, 0, 0] and ledger.tasks == 1
    ledger.requeue_alone((0, 1, 2))
    assert [ledger.next_group(lambda: 3) for _ in range(3)] == [[0], [1], [2]]
    for c in (0, 1, 2):
        ledger.running([c])
    ledger.running([1])  # a retry of chunk 1
    assert [ledger.entries[c].attempts for c in range(3)] == [1, 2, 1]
    assert ledger.next_group(lambda: 3) == [3]
    assert ledger.queued == 0 and ledger.report(stopped=False).retries == 1


def test_committing_moves_finished_chunks_and_counts_them(tmp_path):
    store = _store(tmp_path, n=10, chunk_size=3)
    ledger = Ledger.open(store, 1, run_seed=0)
    ledger.running(ledger.next_group(lambda: 1))
    ledger.finished(0, np.ones((3, 2)), 0.25, "host:1")
    assert ledger.entries[0].state is ChunkState.FINISHED and len(ledger.held) == 1
    store.write_chunks(1, ledger.held)
    ledger.committed([0])
    report = ledger.report(stopped=True)
    assert (report.chunks_run, report.simulations_run, report.chunks_skipped) == (1, 3, 0)
    assert report.chunks_by_worker == {"host:1": 1} and store.pending_chunks(1) == [1, 2, 3]
    assert ledger.entries[0].state is ChunkState.COMMITTED and ledger.rows_done == 3


def test_validity_is_counted_enforced_and_invalid_chunks_reopened(tmp_path):
    store = _store(tmp_path, n=10, chunk_size=3)
    x = np.ones((10, 2))
    x[4, 1] = np.nan  # chunk 1
    x[9, 0] = np.inf  # chunk 3
    store.write_chunks(
        1, [(c, x[slice(*store.round_info(1).chunk_bounds(c))], 0.1) for c in range(4)]
    )
    store.set_stage(1, Stage.SIMULATED)
    assert count_valid(store, 1, 0.5) == (10, 8)
    assert store.counts(1).invalid == 2
    with pytest.raises(InvalidRoundError, match=r"only 8 of 10 .* at least 9 are needed"):
        count_valid(store, 1, 0.9)
    reopen_invalid(store)
    assert store.pending_chunks(1) == [1, 3] and store.stage(1) == Stage.SAMPLED
    assert committed_rows(store, 1) == 6
