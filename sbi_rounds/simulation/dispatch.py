"""Sending a round's chunks to Dask: at most so many in flight, retries, timeouts, commits."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sbi_rounds.chunk_task import simulate_chunk, simulate_chunks
from sbi_rounds.config import ClusterConfig, SimulatorConfig
from sbi_rounds.seeding import derive_seed
from sbi_rounds.simulation.calls import START_TOPIC, SimulatorError
from sbi_rounds.simulation.commits import ChunkCommits, SimulationReport
from sbi_rounds.simulation.stragglers import Stragglers

__all__ = ["SimulationFailed", "SimulationReport", "simulate_round"]

log = logging.getLogger(__name__)

#: Extra seconds the driver waits before cutting a command chunk, so the program's own
#: timeout (which kills the program cleanly) fires first.
_COMMAND_GRACE = 5.0

#: Chunks that take less than this on a worker are sent several to a task, so that a task
#: lasts about this long (Dask's round trip costs milliseconds per task).
TASK_SECONDS = 0.2
#: ... and hold at most about this many bytes of parameters and simulations.
TASK_BYTES = 64 * 2**20


class SimulationFailed(RuntimeError):
    """A chunk kept failing after its retries; its parameters were saved in the run file.

    ``str(e)`` has the simulator's whole error (with its traceback); ``e.summary`` says the
    same in one line, with the first line of the simulator's error.
    """

    def __init__(self, message: str, round_: int, chunk: int, summary: str | None = None) -> None:
        super().__init__(message)
        self.round, self.chunk = round_, chunk
        self.summary = message if summary is None else summary

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


# --- calling a simulator ----------------------------------------------------------------
class _Dispatch:
    """The state of one :func:`simulate_round` call: chunks queued, in flight and done."""

    def __init__(
        self,
        store: Any,
        round_: int,
        simulator: SimulatorConfig,
        cluster: ClusterConfig,
        client: Any,
        run_seed: int,
    ) -> None:
        from sbi_rounds.cluster import expected_threads

        self.store, self.round, self.simulator = store, round_, simulator
        self.cluster, self.client, self.run_seed = cluster, client, run_seed
        self.info = store.round_info(round_)
        self.theta = store.read_theta(round_)
        self.pending = store.pending_chunks(round_)
        self.queue = list(reversed(self.pending))
        self.in_flight: dict[Any, tuple[int, ...]] = {}  # future -> its chunks
        self.chunk_seconds: list[float] = []  # on the worker, of the chunks finished
        self.attempts: dict[int, int] = {}
        self.singles: set[int] = set()  # chunks of a failed group: one per task from now on
        self.started: dict[str, float] = {}  # task key -> monotonic start (chunk_timeout)
        self.finished: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.expected = expected_threads(cluster)
        self.threads, self.threads_checked = 0, -1e9
        self.retries = self.tasks = 0
        self.by_worker: dict[str, int] = {}
        self.timeout = cluster.chunk_timeout
        if self.timeout is not None and simulator.kind == "command":
            self.cut_after = self.timeout + _COMMAND_GRACE
        else:
            self.cut_after = self.timeout

    def limit(self) -> int:
        """Chunks allowed in flight: ``max_in_flight``, or 2 per (expected) worker thread."""
        if self.cluster.max_in_flight is not None:
            return self.cluster.max_in_flight
        now = time.monotonic()
        if now - self.threads_checked > 2.0:
            self.threads = sum(self.client.nthreads().values())
            self.threads_checked = now
        return 2 * max(1, self.threads, self.expected)

    def submit(self, chunk: int) -> None:
        """Send ``chunk`` (again) to the cluster, in a task of its own."""
        a, b = self.info.chunk_bounds(chunk)
        self.attempts[chunk] = self.attempts.get(chunk, 0) + 1
        fut = self.client.submit(
            simulate_chunk,
            self.simulator.model_dump(mode="json"),
            self.theta[a:b],
            self._seed(chunk),
            self.info.x_dim,
            self.timeout,
            key=f"sbi-rounds-r{self.round}-c{chunk}-a{self.attempts[chunk]}-{os.getpid()}-"
            f"{time.time_ns()}",
            pure=False,
        )
        self.in_flight[fut] = (chunk,)
        self.tasks += 1
        fut.add_done_callback(self._fetch)

    def submit_group(self, chunks: list[int]) -> None:
        """Send several fast chunks in one task (see :data:`TASK_SECONDS`). A group that
        fails costs its chunks no attempt: they are sent again one per task."""
        bounds = [self.info.chunk_bounds(c) for c in chunks]
        fut = self.client.submit(
            simulate_chunks,
            self.simulator.model_dump(mode="json"),
            [(self.theta[a:b], self._seed(c)) for c, (a, b) in zip(chunks, bounds, strict=True)],
            self.info.x_dim,
            self.timeout,
            key=f"sbi-rounds-r{self.round}-c{chunks[0]}-{chunks[-1]}-{os.getpid()}-"
            f"{time.time_ns()}",
            pure=False,
        )
        self.in_flight[fut] = tuple(chunks)
        self.tasks += 1
        fut.add_done_callback(self._fetch)

    def _seed(self, chunk: int) -> int:
        return derive_seed(self.run_seed, self.round, "simulate", chunk)

    def group_size(self) -> int:
        """Chunks per task: 1 until chunks are seen finishing in well under
        :data:`TASK_SECONDS` on the workers, then enough for a task to last about that long,
        but never so many that a worker is left without a task while chunks are queued, nor
        more than :data:`TASK_BYTES` of data."""
        if len(self.chunk_seconds) < 4:
            return 1
        typical = float(np.median(self.chunk_seconds[-64:]))
        if typical * 2 >= TASK_SECONDS:
            return 1
        fair = -(-len(self.queue) // (2 * self.limit()))
        row_bytes = 8 * (self.info.theta_dim + self.info.x_dim)
        fits = TASK_BYTES // max(1, row_bytes * self.info.chunk_size)
        return max(1, min(int(TASK_SECONDS / max(typical, 1e-6)), fair, fits))

    def _fetch(self, fut: Any) -> None:
        """Done callback (on Dask's callback thread): fetch the result while the loop commits."""
        if fut.status == "finished":
            try:
                self.finished.put((fut, fut.result(), None))
                return
            except Exception:  # noqa: BLE001 - reported as the chunk's failure
                pass
        self.finished.put((fut, None, self._error(fut)))

    def top_up(self) -> None:
        """Submit queued chunks until the in-flight limit (of tasks) is reached."""
        if not self.queue:
            return
        limit = self.limit()
        while self.queue and len(self.in_flight) < limit:
            group = [self.queue.pop()]
            size = 1 if group[0] in self.singles else self.group_size()
            while self.queue and len(group) < size and self.queue[-1] == group[-1] + 1:
                if self.queue[-1] in self.singles:
                    break
                group.append(self.queue.pop())
            if len(group) == 1:
                self.submit(group[0])
            else:
                self.submit_group(group)

    def fail(self, chunk: int, message: str) -> None:
        """Resubmit a failed chunk, or save it and raise once its retries are used up."""
        if self.attempts[chunk] <= self.cluster.retries:
            self.retries += 1
            log.warning(
                "round %d chunk %d failed (attempt %d of %d), retrying: %s",
                self.round,
                chunk,
                self.attempts[chunk],
                self.cluster.retries + 1,
                one_line(message),
            )
            self.submit(chunk)
            return
        a, b = self.info.chunk_bounds(chunk)
        self.store.record_failure(self.round, chunk, self.theta[a:b], message)
        n = self.attempts[chunk]
        what = f"round {self.round}, chunk {chunk} (rows {a}-{b - 1}) failed {n} time"
        what += "s" if n > 1 else ""
        where = f"{self.store.path} under rounds/{self.round:04d}/failures/{chunk}"
        raise SimulationFailed(
            f"{what}; its parameters and the last error are saved in {where}. "
            f"Last error:\n{message}",
            self.round,
            chunk,
            summary=f"{what}: {one_line(message)} (its parameters and the whole error are "
            f"saved in {where}; -v prints it)",
        )

    def on_start(self, event: tuple[float, dict[str, Any]]) -> None:
        """Dask event handler (runs on the client's thread): a chunk started on a worker."""
        self.started[event[1]["key"]] = time.monotonic()

    def collect(
        self, wait: float
    ) -> tuple[list[tuple[int, np.ndarray, float, str]], list[tuple[int, str]]]:
        """Wait up to ``wait`` seconds for chunks to end.

        Returns:
            ``(results, failures)``: ``(chunk, x, seconds, "host:pid")`` of each finished
            chunk, and ``(chunk, error message)`` of each failed one.
        """
        try:
            batch = [self.finished.get(timeout=wait)]
        except queue.Empty:
            return [], []
        while True:
            try:
                batch.append(self.finished.get_nowait())
            except queue.Empty:
                break
        results, failures = [], []
        for fut, value, error in batch:
            if fut not in self.in_flight:
                continue  # cut by the timeout already
            chunks = self._forget(fut)
            if error is None:
                values = [value] if len(chunks) == 1 else value
                for chunk, (x, seconds, where) in zip(chunks, values, strict=True):
                    results.append((chunk, x, seconds, where))
                    self.chunk_seconds.append(seconds)
            elif len(chunks) == 1:
                failures.append((chunks[0], error))
            else:  # sent again one per task, where a failing chunk counts its attempts
                self.queue.extend(reversed(chunks))
                self.singles.update(chunks)
        return results, failures

    def _forget(self, fut: Any) -> tuple[int, ...]:
        self.started.pop(str(fut.key), None)
        return self.in_flight.pop(fut)

    @staticmethod
    def _error(fut: Any) -> str:
        """The failure message of a future that did not finish (or whose result was lost)."""
        if fut.status != "error":
            return f"the chunk's task was {fut.status} (scheduler restarted or connection lost?)"
        error = fut.exception()
        if isinstance(error, SimulatorError):
            return str(error)
        return f"{type(error).__name__}: {error}"

    def hung(self) -> list[tuple[int, str]]:
        """Cut chunks that ran longer than the timeout, restarting the workers stuck in them.

        Returns:
            ``(chunk, error message)`` of each chunk cut.
        """
        if self.cut_after is None or not self.in_flight:
            return []
        now = time.monotonic()
        hung = [
            f for f in self.in_flight if now - self.started.get(str(f.key), now) > self.cut_after
        ]
        if not hung:
            return []
        keys = {str(f.key) for f in hung}
        workers = [w for w, ks in self.client.processing().items() if keys & {str(k) for k in ks}]
        self.client.cancel(hung, force=True)
        if workers:
            # In the background: the retries go to other workers meanwhile.
            threading.Thread(
                target=_restart_workers,
                args=(self.client, workers),
                name="sbi-rounds-restart-hung",
                daemon=True,
            ).start()
        message = (
            f"chunk timed out after {self.timeout:g} s (cluster.chunk_timeout); the "
            f"worker running it ({', '.join(workers) or 'unknown'}) is being restarted"
        )
        cut = []
        for fut in hung:
            chunks = self._forget(fut)
            if len(chunks) == 1:
                cut.append((chunks[0], message))
            else:  # sent again one per task: the chunk that hangs counts its attempts
                self.queue.extend(reversed(chunks))
                self.singles.update(chunks)
        return cut


def _restart_workers(client: Any, workers: list[str]) -> None:
    """Restart hung workers through their nannies (workers without one are removed)."""
    t0 = time.monotonic()
    try:
        status = client.restart_workers(workers, timeout=300, raise_for_error=False)
    except Exception as e:  # noqa: BLE001 - a failed restart must not hide the timeout
        log.warning("could not restart hung worker(s) %s: %s", ", ".join(workers), e)
        return
    log.warning("%s", restarted_text(status, time.monotonic() - t0))


def restarted_text(status: dict[str, str], seconds: float) -> str:
    """``restarted hung worker tcp://...:4321 in 2.1 s``, naming those that failed to."""
    done = [w for w, s in status.items() if s == "OK"]
    failed = [f"{w} ({s})" for w, s in status.items() if s != "OK"]
    parts = []
    if done:
        parts.append(f"restarted hung worker{'s' * (len(done) > 1)} {', '.join(done)}")
    if failed:
        parts.append(f"could not restart hung worker{'s' * (len(failed) > 1)} {', '.join(failed)}")
    return f"{'; '.join(parts) or 'no hung worker to restart'} in {seconds:.1f} s"


def simulate_round(
    store: Any,
    round_: int,
    *,
    simulator: SimulatorConfig,
    cluster: ClusterConfig,
    client: Any,
    run_seed: int,
    progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SimulationReport:
    """Simulate every chunk of ``round_`` not yet committed, committing each as it finishes.

    The chunk layout is the one planned in the run file. At most ``max_in_flight`` tasks
    (default: 2 per worker thread) are on the cluster at a time, so memory stays flat; a
    task is one chunk, or several once chunks take far less than :data:`TASK_SECONDS`
    (each with its own seed: the same results). Finished chunks are committed at once, in
    the order they finish. A chunk that fails (the simulator raised, or timed out after
    ``chunk_timeout`` seconds of running) is resubmitted up to ``cluster.retries`` times;
    then its parameters and error are saved (``store.record_failure``) and
    :class:`SimulationFailed` is raised. A chunk whose worker dies is redone elsewhere by
    Dask itself (and counts as a failure only once Dask gives up on it, see
    ``distributed.scheduler.allowed-failures``). On return or exception, chunks still in
    flight are cancelled; committed chunks are never simulated again.

    Args:
        store: The run's ``RunStore``; the round's parameters must be sampled.
        round_: The round (1-based).
        simulator: The simulator.
        cluster: Chunking, in-flight limit, retries and timeout settings.
        client: A ``distributed.Client`` connected to the cluster.
        run_seed: The run's seed; chunk ``c`` uses ``derive_seed(run_seed, round_,
            "simulate", c)``.
        progress: Called after each commit as ``progress(done, total,
            simulations_per_second)``, the rate over this call's simulations.
        should_stop: Polled four times a second; True stops the call (in-flight chunks
            are cancelled, ``stopped`` is set in the report).

    Returns:
        What was done.
    """
    d = _Dispatch(store, round_, simulator, cluster, client, run_seed)
    info = d.info
    if d.pending and int(info.theta_done) < info.num_simulations:
        raise ValueError(
            f"round {round_} has {info.theta_done} of {info.num_simulations} parameter sets; "
            "sample them (stages.sample_proposal) before simulating"
        )
    commits = ChunkCommits(store, d, progress)
    stopped, subscribed, stragglers = False, False, Stragglers(round_)
    if d.pending:  # start times: for the timeout, and to report chunks running far too long
        client.subscribe_topic(START_TOPIC, d.on_start)
        subscribed = True
    try:
        d.top_up()
        while d.in_flight:
            if should_stop is not None and should_stop():
                stopped = True
                break
            due = commits.last + cluster.commit_interval - time.perf_counter()
            wait = min(0.25, max(due, 0.0)) if commits.finished else 0.25
            results, failures = d.collect(wait=wait)
            commits.finished.extend(results)
            stragglers.check(d.in_flight, d.started, results)
            for chunk, message in failures + d.hung():
                d.fail(chunk, message)
            d.top_up()
            if commits.finished and (
                not d.in_flight or time.perf_counter() - commits.last >= cluster.commit_interval
            ):
                commits.commit(one_by_one=cluster.commit_interval == 0)
    finally:
        try:  # what finished is kept, also when stopping or failing
            commits.commit(one_by_one=cluster.commit_interval == 0)
        finally:
            if d.in_flight:
                client.cancel(list(d.in_flight), force=True)
            if subscribed:
                client.unsubscribe_topic(START_TOPIC)
    return commits.report(stopped)
