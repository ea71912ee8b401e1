"""Sending chunks to Dask: the tasks in flight, their results, failures and timeouts.

The Dask side of a chunk's life; what to send, when to retry and when to commit is decided in
:mod:`sbi_rounds.simulation.ledger`, which drives :class:`Tasks`.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sbi_rounds.chunk_task import simulate_chunk, simulate_chunks
from sbi_rounds.config import ClusterConfig, SimulatorConfig
from sbi_rounds.simulation.calls import SimulatorError

if TYPE_CHECKING:
    from sbi_rounds.simulation.ledger import ChunkEntry

__all__ = ["TASK_BYTES", "TASK_SECONDS", "Tasks", "restarted_text"]

log = logging.getLogger(__name__)

#: Extra seconds the driver waits before cutting a command chunk, so the program's own
#: timeout (which kills the program cleanly) fires first.
_COMMAND_GRACE = 5.0

#: Chunks that take less than this on a worker are sent several to a task, so that a task
#: lasts about this long (Dask's round trip costs milliseconds per task).
TASK_SECONDS = 0.2
#: ... and hold at most about this many bytes of parameters and simulations.
TASK_BYTES = 64 * 2**20

#: A chunk's end as :meth:`Tasks.collect` returns it: ``(chunk, x (n, K), seconds, "host:pid")``.
Result = tuple[int, np.ndarray, float, str]
#: A task that ended without its results: ``(its chunks, error message)``.
Failure = tuple[tuple[int, ...], str]


class Tasks:
    """The Dask tasks of one round's simulation: sent, in flight, finished or cut.

    Args:
        client: A ``distributed.Client``.
        round_: The round (it names the tasks' keys).
        simulator: The simulator.
        cluster: The in-flight limit and the chunk timeout.
        theta: The round's parameters, with shape ``(N, D)``.
        x_dim: The number of summaries ``K``.
    """

    def __init__(
        self,
        client: Any,
        round_: int,
        simulator: SimulatorConfig,
        cluster: ClusterConfig,
        theta: np.ndarray,
        x_dim: int,
    ) -> None:
        from sbi_rounds.cluster import expected_threads

        self.client, self.round, self.cluster = client, round_, cluster
        self.simulator = simulator.model_dump(mode="json")
        self.theta, self.x_dim = theta, x_dim
        self.in_flight: dict[Any, tuple[int, ...]] = {}  # future -> its chunks
        self.chunk_seconds: list[float] = []  # on the worker, of the chunks finished
        self.started: dict[str, float] = {}  # task key -> monotonic start (chunk_timeout)
        self.finished: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.expected = expected_threads(cluster)
        self.threads, self.threads_checked = 0, -1e9
        self.timeout = cluster.chunk_timeout
        if self.timeout is not None and simulator.kind == "command":
            self.cut_after = self.timeout + _COMMAND_GRACE
        else:
            self.cut_after = self.timeout

    def limit(self) -> int:
        """Tasks allowed in flight: ``max_in_flight``, or 2 per (expected) worker thread."""
        if self.cluster.max_in_flight is not None:
            return self.cluster.max_in_flight
        now = time.monotonic()
        if now - self.threads_checked > 2.0:
            self.threads = sum(self.client.nthreads().values())
            self.threads_checked = now
        return 2 * max(1, self.threads, self.expected)

    def send(self, entries: Sequence[ChunkEntry]) -> None:
        """Send one chunk in a task of its own (its key names its attempt), or several
        neighbouring chunks in one task (see :data:`TASK_SECONDS`)."""
        first, last = entries[0], entries[-1]
        if len(entries) == 1:
            what = f"c{first.chunk}-a{first.attempts}"
            args: tuple[Any, ...] = (simulate_chunk, self.simulator, *self._chunk(first))
        else:
            what = f"c{first.chunk}-{last.chunk}"
            args = (simulate_chunks, self.simulator, [self._chunk(e) for e in entries])
        fut = self.client.submit(
            *args,
            self.x_dim,
            self.timeout,
            key=f"sbi-rounds-r{self.round}-{what}-{os.getpid()}-{time.time_ns()}",
            pure=False,
        )
        self.in_flight[fut] = tuple(e.chunk for e in entries)
        fut.add_done_callback(self._fetch)

    def _chunk(self, entry: ChunkEntry) -> tuple[np.ndarray, int]:
        return self.theta[entry.start : entry.stop], entry.seed

    def group_size(self, queued: int, chunk_size: int, theta_dim: int) -> int:
        """Chunks per task: 1 until chunks are seen finishing in well under
        :data:`TASK_SECONDS` on the workers, then enough for a task to last about that long,
        but never so many that a worker is left without a task while ``queued`` chunks wait,
        nor more than :data:`TASK_BYTES` of data."""
        if len(self.chunk_seconds) < 4:
            return 1
        typical = float(np.median(self.chunk_seconds[-64:]))
        if typical * 2 >= TASK_SECONDS:
            return 1
        fair = -(-queued // (2 * self.limit()))
        row_bytes = 8 * (theta_dim + self.x_dim)
        fits = TASK_BYTES // max(1, row_bytes * chunk_size)
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

    def on_start(self, event: tuple[float, dict[str, Any]]) -> None:
        """Dask event handler (runs on the client's thread): a chunk started on a worker."""
        self.started[event[1]["key"]] = time.monotonic()

    def collect(self, wait: float) -> tuple[list[Result], list[Failure]]:
        """Wait up to ``wait`` seconds for tasks to end.

        Returns:
            ``(results, failures)``: each finished chunk, and each task that failed.
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
            if error is not None:
                failures.append((chunks, error))
                continue
            values = [value] if len(chunks) == 1 else value
            for chunk, (x, seconds, where) in zip(chunks, values, strict=True):
                results.append((chunk, x, seconds, where))
                self.chunk_seconds.append(seconds)
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

    def hung(self) -> list[Failure]:
        """Cut tasks that ran longer than the timeout, restarting the workers stuck in them.

        Returns:
            Each task cut, as a failure.
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
        return [(self._forget(fut), message) for fut in hung]

    def cancel(self) -> None:
        """Cancel the tasks still in flight."""
        if self.in_flight:
            self.client.cancel(list(self.in_flight), force=True)


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
