"""A simulation chunk's life, from plan to commit, in one place, with a typed ledger.

A round's ``N`` simulations are cut into chunks: chunk ``c`` is rows ``[c * size, min((c + 1)
* size, N))``. The run file (``store``) is the single source of truth about which chunks are
committed; the :class:`Ledger` holds, for one call of :func:`simulate_round`, a frozen
:class:`ChunkEntry` per chunk. Every chunk lives through the same story, told here in order:

1. **Plan** (:func:`plan_round`): the chunk size is chosen (``chunks.choose_chunk_size``;
   ``measure`` times the simulator first, :func:`measured_speed`), stored with the round and
   never changed, so a resume sees the same chunks and seeds; every chunk starts pending.
2. **Open the ledger, resume** (:meth:`Ledger.open`): chunks the run file marks committed are
   ``EARLIER`` and never simulated again; the others are ``QUEUED``, each with its seed
   ``derive_seed(run_seed, round, "simulate", c)``: results do not depend on the workers.
3. **Dispatch** (:func:`_dispatch`): queued chunks go to Dask (``dispatch.Tasks``), at most
   ``max_in_flight`` tasks at a time; a task is one chunk, or several neighbours once chunks
   are seen to be fast (each keeps its seed: the same results). They are ``RUNNING``.
4. **Finish, fail or hang**: a task comes back with its chunks ``FINISHED`` (simulations held
   here until committed), or failed: the simulator raised, the worker was lost for good, or
   it ran past ``chunk_timeout`` and was cut (its worker restarted).
5. **Retry** (:func:`_retry`): the chunks of a failed task of several go back to the queue to
   be sent alone (no attempt counted); a chunk that failed alone is sent again at once while
   it has retries left (``cluster.retries``), else it is ``FAILED``: its parameters and error
   are saved in the run file and :class:`SimulationFailed` ends the call.
6. **Commit** (:func:`_commit`): finished chunks are written together at most every
   ``commit_interval`` seconds (0: each in a write of its own): rows and their validity before
   their done marks (``RunStore.write_chunks``), so a chunk marked done always has its data.
   They are then ``COMMITTED``. A stop or an error commits what finished first; a kill loses
   only chunks not committed yet, which the next session's ledger queues again.
7. **Validity** (:func:`count_valid`): a row is valid when its summaries are all finite (marked
   when it is committed); the append stage needs ``min_valid_fraction`` of the round valid,
   never fewer than :data:`MIN_VALID_ROWS`; :func:`reopen_invalid` reopens invalid chunks.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import numpy as np

from sbi_rounds.config import ClusterConfig, SimulatorConfig
from sbi_rounds.errors import InvalidRoundError
from sbi_rounds.seeding import derive_seed
from sbi_rounds.simulation.calls import START_TOPIC
from sbi_rounds.simulation.chunks import choose_chunk_size
from sbi_rounds.simulation.dispatch import Failure, Tasks
from sbi_rounds.simulation.outcome import SimulationFailed, SimulationReport, one_line
from sbi_rounds.simulation.stragglers import Stragglers
from sbi_rounds.store import RoundInfo, RunStore, Stage

__all__ = [
    "MIN_VALID_ROWS", "ChunkEntry", "ChunkState", "Ledger", "committed_rows", "count_valid",
    "measured_speed", "plan_round", "reopen_invalid", "simulate_round", "valid_rows_needed",
]  # fmt: skip

log = logging.getLogger(__name__)

#: Progress after each commit: ``progress(done, total, simulations_per_second)``.
Progress = Callable[[int, int, float], None]


# --- 1. plan ---------------------------------------------------------------------------------
def measured_speed(
    store: RunStore, round_: int, cluster: ClusterConfig, time_probe: Callable[[], float]
) -> float | None:
    """Seconds per simulation a ``measure`` chunk size is chosen by (None for other sizes):
    the previous round's, else ``time_probe()`` (the simulator timed on a probe)."""
    if cluster.chunk_size != "measure":
        return None
    measured = store.seconds_per_simulation(round_ - 1) if round_ > 1 else None
    return measured if measured else time_probe()  # none stored: round 1, or imported


def plan_round(
    store: RunStore,
    round_: int,
    *,
    cluster: ClusterConfig,
    seconds_per_simulation: float | None = None,
    **layout: Any,
) -> RoundInfo:
    """Plan ``round_`` in ``store`` with its chunk size (``measure`` without a measured speed
    plans as ``auto``); ``layout`` is ``RunStore.plan_round``'s (``num_simulations``, ...)."""
    if cluster.chunk_size == "measure" and seconds_per_simulation is None:
        cluster = cluster.model_copy(update={"chunk_size": "auto"})
    size = choose_chunk_size(cluster, layout["num_simulations"], seconds_per_simulation)
    return store.plan_round(round_, chunk_size=size, **layout)


# --- 2. the ledger, opened where the run file left off -----------------------------------------
class ChunkState(enum.Enum):
    """Where a chunk is in its life, within one :func:`simulate_round` call."""

    EARLIER = "committed by an earlier call"
    QUEUED = "waiting to be sent"
    RUNNING = "in a task on the cluster"
    FINISHED = "simulated, held until committed"
    COMMITTED = "committed by this call"
    FAILED = "out of retries"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkEntry:
    """One chunk in the ledger.

    Attributes:
        chunk: Its index.
        start: Its first row (``stop``: the row after its last).
        seed: The seed it is simulated with.
        state: Where it is.
        attempts: Tasks of its own it was sent in (tasks of several chunks do not count).
        alone: Sent alone from now on (a task of several that held it failed).
        seconds: Its time on the worker, once finished.
        worker: ``"host:pid"`` of the worker that simulated it, once finished.
    """

    chunk: int
    start: int
    stop: int
    seed: int
    state: ChunkState
    attempts: int = 0
    alone: bool = False
    seconds: float | None = None
    worker: str | None = None


class Ledger:
    """Every chunk of a round in one :func:`simulate_round` call. Entries are frozen; each
    transition below replaces a chunk's entry (copying the whole ledger per event would cost
    O(chunks) each, O(chunks²) a round). ``entries`` is a read-only view."""

    def __init__(self, info: RoundInfo, entries: dict[int, ChunkEntry]) -> None:
        self.info, self._entries = info, entries
        self.entries: Mapping[int, ChunkEntry] = MappingProxyType(entries)
        self._queue = [c for c in reversed(entries) if entries[c].state is ChunkState.QUEUED]
        self.held: list[tuple[int, np.ndarray, float]] = []  # finished: (chunk, x, seconds)
        self._commit_order: list[int] = []
        self.tasks, self.t_start, self.last_commit = 0, time.perf_counter(), -math.inf
        self.rows_run, self.rows_done = 0, self.rows(ChunkState.EARLIER)  # committed: now, all

    @classmethod
    def open(cls, store: RunStore, round_: int, run_seed: int) -> Ledger:
        """The round's chunks: those the run file marks committed are ``EARLIER``, the rest
        ``QUEUED``, in order."""
        info = store.round_info(round_)
        pending = set(store.pending_chunks(round_))
        entries = {}
        for c in range(info.num_chunks):
            start, stop = info.chunk_bounds(c)
            state = ChunkState.QUEUED if c in pending else ChunkState.EARLIER
            seed = derive_seed(run_seed, round_, "simulate", c)
            entries[c] = ChunkEntry(chunk=c, start=start, stop=stop, seed=seed, state=state)
        return cls(info, entries)

    def _set(self, chunk: int, **changes: Any) -> ChunkEntry:
        entry = self._entries[chunk] = replace(self._entries[chunk], **changes)
        return entry

    def rows(self, *states: ChunkState) -> int:
        return sum(e.stop - e.start for e in self._entries.values() if e.state in states)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def next_group(self, size: Callable[[], int]) -> list[int]:
        """Take the next queued chunk and up to ``size() - 1`` queued neighbours after it
        (none for a chunk to be sent alone)."""
        group = [self._queue.pop()]
        limit = 1 if self._entries[group[0]].alone else size()
        while self._queue and len(group) < limit and self._queue[-1] == group[-1] + 1:
            if self._entries[self._queue[-1]].alone:
                break
            group.append(self._queue.pop())
        return group

    def running(self, chunks: list[int]) -> list[ChunkEntry]:
        """Chunks sent in one task; a chunk sent alone counts an attempt."""
        self.tasks += 1
        alone = len(chunks) == 1
        return [
            self._set(c, state=ChunkState.RUNNING, attempts=self._entries[c].attempts + alone)
            for c in chunks
        ]

    def requeue_alone(self, chunks: tuple[int, ...]) -> None:
        """The chunks of a failed task of several: queued next, each to go alone."""
        for c in chunks:
            self._set(c, state=ChunkState.QUEUED, alone=True)
        self._queue.extend(reversed(chunks))

    def finished(self, chunk: int, x: np.ndarray, seconds: float, worker: str) -> None:
        self._set(chunk, state=ChunkState.FINISHED, seconds=seconds, worker=worker)
        self.held.append((chunk, x, seconds))

    def failed(self, chunk: int) -> ChunkEntry:
        return self._set(chunk, state=ChunkState.FAILED)

    def committed(self, chunks: list[int]) -> None:
        for c in chunks:
            self._set(c, state=ChunkState.COMMITTED)
        self._commit_order.extend(chunks)
        self.last_commit = time.perf_counter()
        rows = sum(self._entries[c].stop - self._entries[c].start for c in chunks)
        self.rows_run, self.rows_done = self.rows_run + rows, self.rows_done + rows

    def report(self, stopped: bool) -> SimulationReport:
        """What the call did, read from the entries."""
        by_worker: dict[str, int] = {}
        for c in self._commit_order:
            where = str(self._entries[c].worker)
            by_worker[where] = by_worker.get(where, 0) + 1
        return SimulationReport(
            chunks_run=len(self._commit_order),
            chunks_skipped=sum(e.state is ChunkState.EARLIER for e in self._entries.values()),
            simulations_run=self.rows_run,
            seconds=time.perf_counter() - self.t_start,
            retries=sum(max(0, e.attempts - 1) for e in self._entries.values()),
            stopped=stopped,
            chunks_by_worker=by_worker,
            tasks=self.tasks,
        )


# --- 3.-6. dispatch, finish or fail, retry, commit ---------------------------------------------
def simulate_round(
    store: RunStore,
    round_: int,
    *,
    simulator: SimulatorConfig,
    cluster: ClusterConfig,
    client: Any,
    run_seed: int,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SimulationReport:
    """Simulate every chunk of ``round_`` not yet committed, committing them as they finish
    (steps 2 to 6 of this module's story). A chunk whose worker dies is redone elsewhere by
    Dask itself (a failure only once Dask gives up, ``distributed.scheduler.allowed-failures``).
    On return or exception, what finished is committed and what is in flight cancelled.

    Args:
        store: The run's ``RunStore``; the round's parameters must be sampled.
        round_: The round (1-based).
        simulator: The simulator.
        cluster: Chunking, in-flight limit, retries, commit interval and timeout settings.
        client: A ``distributed.Client`` connected to the cluster.
        run_seed: The run's seed, from which each chunk's is derived.
        progress: ``progress(done, total, simulations_per_second)`` after each commit, the
            rate over this call's simulations.
        should_stop: Polled four times a second; True stops the call (``report.stopped``).

    Raises:
        SimulationFailed: A chunk failed more than ``cluster.retries`` times.
    """
    ledger = Ledger.open(store, round_, run_seed)
    info = ledger.info
    if ledger.queued and int(info.theta_done) < info.num_simulations:
        raise ValueError(
            f"round {round_} has {info.theta_done} of {info.num_simulations} parameter sets; "
            "sample them (stages.sample_proposal) before simulating"
        )
    tasks = Tasks(client, round_, simulator, cluster, store.read_theta(round_), info.x_dim)
    stopped, stragglers, one_by_one = False, Stragglers(round_), cluster.commit_interval == 0
    subscribed = bool(ledger.queued)  # start times: for the timeout, and to report stragglers
    if subscribed:
        client.subscribe_topic(START_TOPIC, tasks.on_start)
    try:
        _dispatch(ledger, tasks)
        while tasks.in_flight:
            if should_stop is not None and should_stop():
                stopped = True
                break
            due = ledger.last_commit + cluster.commit_interval - time.perf_counter()
            results, failures = tasks.collect(
                wait=min(0.25, max(due, 0.0)) if ledger.held else 0.25
            )
            for chunk, x, seconds, worker in results:
                ledger.finished(chunk, x, seconds, worker)
            stragglers.check(tasks.in_flight, tasks.started, results)
            for failure in failures + tasks.hung():
                _retry(store, ledger, tasks, cluster, failure)
            _dispatch(ledger, tasks)
            if ledger.held and (
                not tasks.in_flight
                or time.perf_counter() - ledger.last_commit >= cluster.commit_interval
            ):
                _commit(store, ledger, progress, one_by_one)
    finally:
        try:  # what finished is kept, also when stopping or failing
            _commit(store, ledger, progress, one_by_one)
        finally:
            tasks.cancel()
            if subscribed:
                client.unsubscribe_topic(START_TOPIC)
    return ledger.report(stopped)


def _dispatch(ledger: Ledger, tasks: Tasks) -> None:
    """Send queued chunks until the in-flight limit (of tasks) is reached."""
    if not ledger.queued:
        return
    limit = tasks.limit()
    info = ledger.info
    while ledger.queued and len(tasks.in_flight) < limit:
        group = ledger.next_group(
            lambda: tasks.group_size(ledger.queued, info.chunk_size, info.theta_dim)
        )
        tasks.send(ledger.running(group))


def _retry(
    store: RunStore, ledger: Ledger, tasks: Tasks, cluster: ClusterConfig, failure: Failure
) -> None:
    """Queue the chunks of a failed task of several to go alone; send a chunk that failed
    alone again, or, out of retries, save its parameters and error and raise."""
    chunks, message = failure
    if len(chunks) > 1:
        ledger.requeue_alone(chunks)
        return
    entry, round_ = ledger.entries[chunks[0]], ledger.info.round
    if entry.attempts <= cluster.retries:
        log.warning(
            "round %d chunk %d failed (attempt %d of %d), retrying: %s",
            round_, entry.chunk, entry.attempts, cluster.retries + 1, one_line(message),
        )  # fmt: skip
        tasks.send(ledger.running([entry.chunk]))
        return
    ledger.failed(entry.chunk)
    store.record_failure(round_, entry.chunk, tasks.theta[entry.start : entry.stop], message)
    rows = (entry.start, entry.stop)
    raise SimulationFailed.out_of_retries(
        store.path, round_, entry.chunk, rows, entry.attempts, message
    )


def _commit(
    store: RunStore, ledger: Ledger, progress: Progress | None, one_by_one: bool = False
) -> None:
    """Commit the finished chunks in one write (none: nothing); ``one_by_one``
    (``commit_interval=0``): one write per chunk, also for chunks finished together."""
    if one_by_one:
        batch, ledger.held = ledger.held, []
        for item in batch:
            ledger.held.append(item)
            _commit(store, ledger, progress)
        return
    if not ledger.held:
        return
    store.write_chunks(ledger.info.round, ledger.held)
    chunks = [chunk for chunk, _, _ in ledger.held]
    ledger.held = []
    ledger.committed(chunks)
    if progress is not None:
        elapsed = ledger.last_commit - ledger.t_start
        rate = ledger.rows_run / elapsed if elapsed > 0 else 0.0
        progress(ledger.rows_done, ledger.info.num_simulations, rate)


# --- 7. validity, and resuming ------------------------------------------------------------------
#: Valid rows a round needs whatever ``min_valid_fraction`` says: training splits off at
#: least one validation row, and a round without rows breaks sbi's proposal weighting.
MIN_VALID_ROWS = 2


def valid_rows_needed(n: int, min_valid_fraction: float) -> int:
    """Valid rows of ``n`` a round needs to be trained on (at least ``MIN_VALID_ROWS``)."""
    return max(MIN_VALID_ROWS, math.ceil(n * min_valid_fraction - 1e-9))


def count_valid(store: RunStore, round_: int, min_valid_fraction: float) -> tuple[int, int]:
    """Count and record a simulated round's valid rows; ``(simulations, valid)``.

    Raises:
        InvalidRoundError: Fewer than :func:`valid_rows_needed` are valid.
    """
    _, _, valid = store.read_simulations(round_)
    n, n_valid = len(valid), int(valid.sum())
    store.set_counts(round_, n, n_valid)
    needed = valid_rows_needed(n, min_valid_fraction)
    if n_valid < needed:
        raise InvalidRoundError(
            f"round {round_}: only {n_valid} of {n} simulations are valid (finite); at least "
            f"{needed} are needed (cluster.min_valid_fraction={min_valid_fraction}"
            f", and never fewer than {MIN_VALID_ROWS}). The invalid rows are kept in "
            f"{store.path} (rounds/{round_:04d}/valid). Fix the simulator or the prior, then "
            "rerun the same command with --resimulate-invalid to simulate the invalid rows "
            "again (or lower --min-valid-fraction to train on the valid ones)."
        )
    if n_valid < n:
        log.warning(
            "round %d: %d of %d simulations are invalid and left out of training",
            round_, n - n_valid, n,
        )  # fmt: skip
    return n, n_valid


def reopen_invalid(store: RunStore) -> None:
    """Send the committed chunks with invalid rows back to pending, in every round not yet
    appended for training (the round that stopped for too few valid simulations)."""
    for r in store.rounds():
        stage = store.stage(r)
        if stage is not None and Stage.SAMPLED <= stage < Stage.APPENDED:
            rows = store.reopen_invalid_chunks(r)
            if rows:
                log.warning("round %d: %d invalid rows will be simulated again", r, rows)


def committed_rows(store: RunStore, round_: int) -> int:
    """Simulations of a planned round committed so far (a resume simulates the rest)."""
    info = store.round_info(round_)
    missing = sum(b - a for a, b in map(info.chunk_bounds, store.pending_chunks(round_)))
    return info.num_simulations - missing
