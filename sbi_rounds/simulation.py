"""Running simulations: calling user simulators, and sending a round's chunks to Dask.

Simulators come in three kinds (``SimulatorConfig.kind``):

* ``batched``: ``f(theta) -> x`` with ``theta`` a float32 torch tensor of shape ``(N, D)``
  and ``x`` of shape ``(N, K)``, a torch tensor or anything numpy can convert.
* ``per_sample``: ``f(theta) -> x`` with ``theta`` a float32 numpy array of shape ``(D,)``
  and ``x`` of shape ``(K,)``; it is called once per row.
* ``command``: an external program, run once per chunk (see the protocol below).

Python simulators are imported on the worker from their ``module:function`` path (nothing
is pickled but the path and keyword arguments). They should draw their randomness from
torch's, numpy's or ``random``'s global generator, which is seeded per chunk, or accept a
``seed`` keyword argument.

The external program protocol (``kind="command"``). For each chunk, sbi-rounds writes the
chunk's parameters to a file, runs the command, and reads the summaries back:

* The command is a list of arguments, run without a shell. The placeholders ``{input}``,
  ``{output}``, ``{seed}`` and ``{n}`` inside arguments are replaced by the input path,
  the output path, the chunk's seed (an integer below 2**63) and the number of
  simulations. Give both ``{input}`` and ``{output}``, or neither: then the two paths are
  appended as the last two arguments. Other braces are left alone. The same four values
  are also in the environment as ``SBI_ROUNDS_INPUT``, ``SBI_ROUNDS_OUTPUT``,
  ``SBI_ROUNDS_SEED`` and ``SBI_ROUNDS_N``.
* The input file is CSV text: one line per simulation, ``D`` comma-separated numbers
  (9 significant digits, exact for the stored float32 values), no header.
* The program writes the output file as CSV text: one line per simulation, in the input's
  order, ``K`` comma-separated numbers; ``nan`` or ``inf`` marks a failed simulation
  (kept and marked invalid); lines starting with ``#`` are ignored. No header.
* Exit status 0 means success; anything else is an error (the chunk is retried), and the
  end of the program's standard error is reported. ``cluster.chunk_timeout`` kills it.
* The program runs in the worker's working directory; give it by absolute path or on
  the workers' ``PATH``. Paths are in a fresh temporary directory, removed afterwards.

Every chunk gets its own seed, derived from the run seed, the round and the chunk index,
so results do not depend on the number of workers or the order chunks finish in.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import queue
import shlex
import subprocess
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbi_rounds.config import ClusterConfig, SimulatorConfig
from sbi_rounds.imports import import_object
from sbi_rounds.seeding import derive_seed, seeded

__all__ = [
    "AUTO_CHUNKS",
    "MAX_AUTO_CHUNK_SIZE",
    "START_TOPIC",
    "SimulationFailed",
    "SimulationReport",
    "SimulatorError",
    "call_simulator",
    "choose_chunk_size",
    "measure_seconds_per_simulation",
    "run_chunk",
    "simulate_round",
]

log = logging.getLogger(__name__)

#: ``auto`` splits a round into about this many chunks (whatever the number of workers).
AUTO_CHUNKS = 64
#: ``auto`` never puts more simulations than this into one chunk.
MAX_AUTO_CHUNK_SIZE = 1000
#: Dask event topic under which workers announce that a chunk started.
START_TOPIC = "sbi-rounds-chunk-started"
#: Extra seconds the driver waits before cutting a command chunk, so the program's own
#: timeout (which kills the program cleanly) fires first.
_COMMAND_GRACE = 5.0
_PLACEHOLDERS = ("{input}", "{output}", "{seed}", "{n}")


class SimulatorError(RuntimeError):
    """The simulator raised, or returned something that is not ``(N, K)`` real numbers."""


class SimulationFailed(RuntimeError):
    """A chunk kept failing after its retries; its parameters were saved in the run file."""

    def __init__(self, message: str, round_: int, chunk: int) -> None:
        super().__init__(message)
        self.round, self.chunk = round_, chunk


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
    """

    chunks_run: int
    chunks_skipped: int
    simulations_run: int
    seconds: float
    retries: int
    stopped: bool
    chunks_by_worker: dict[str, int] = field(default_factory=dict)


# --- calling a simulator ----------------------------------------------------------------
def _to_numpy(out: Any, path: str) -> np.ndarray:
    if isinstance(out, torch.Tensor):
        return out.detach().cpu().numpy()
    try:
        return np.asarray(out)
    except Exception as e:  # noqa: BLE001 - reported with the simulator's name
        raise SimulatorError(f"simulator {path} returned {type(out).__name__}, not numbers") from e


def _check_output(x: np.ndarray, n: int, x_dim: int | None, path: str) -> np.ndarray:
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise SimulatorError(
            f"simulator {path} returned an array of {x.dtype}; it must return real numbers"
        )
    if x.ndim == 1 and n == x.shape[0] and x_dim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] != n or (x_dim is not None and x.shape[1] != x_dim):
        want = f"({n}, {x_dim if x_dim is not None else 'K'})"
        hint = (f"; xobs has {x_dim} values, so the simulator must return {x_dim} summaries "
                "per simulation" if x_dim is not None and x.ndim == 2 and x.shape[0] == n else "")
        raise SimulatorError(
            f"simulator {path} returned shape {tuple(x.shape)} for {n} parameter sets; "
            f"expected {want}{hint}"
        )
    return x.astype(np.float64, copy=False)


def _accepts_seed(fn: Callable[..., Any]) -> bool:
    try:
        return "seed" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def call_simulator(sim: SimulatorConfig, theta: np.ndarray, seed: int,
                   x_dim: int | None = None, *, timeout: float | None = None) -> np.ndarray:
    """Simulate a batch of parameters with every RNG seeded by ``seed``.

    Args:
        sim: The simulator and its kind.
        theta: Parameters, with shape ``(N, D)``.
        seed: The chunk's seed (below 2**63).
        x_dim: The expected number of summaries ``K`` (None: any).
        timeout: Seconds after which an external program is killed (``command`` only).

    Returns:
        The summaries, float64 with shape ``(N, K)``; NaN or infinite rows are allowed.

    Raises:
        SimulatorError: The simulator raised (its traceback is in the message), timed
            out, or returned something of the wrong type or shape.
    """
    theta = np.asarray(theta, dtype=np.float32)
    n = theta.shape[0]
    if sim.kind == "command":
        x = _run_command(list(sim.command or ()), theta, seed, timeout)
        return _check_output(x, n, x_dim, shlex.join(sim.command or ()))
    fn = import_object(sim.path, "simulator")
    kwargs = dict(sim.kwargs)
    if _accepts_seed(fn):
        kwargs["seed"] = seed
    try:
        with seeded(seed):
            if sim.kind == "batched":
                out = _to_numpy(fn(torch.from_numpy(theta), **kwargs), sim.path)
            else:
                rows = [_to_numpy(fn(row, **kwargs), sim.path).reshape(-1) for row in theta]
                out = np.stack(rows) if rows else np.zeros((0, x_dim or 0))
    except SimulatorError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's simulator may raise anything
        raise SimulatorError(
            f"simulator {sim.path} raised {type(e).__name__}: {e}\n{traceback.format_exc()}"
        ) from None
    return _check_output(out, n, x_dim, sim.path)


def _command_args(command: list[str], values: dict[str, str]) -> list[str]:
    """Fill the placeholders of ``command`` (see the module docstring)."""
    text = " ".join(command)
    has_in, has_out = "{input}" in text, "{output}" in text
    if has_in != has_out:
        raise SimulatorError(
            f"simulator command {shlex.join(command)!r} has {'{input}' if has_in else '{output}'} "
            "but not the other; give both placeholders, or neither (then the input and output "
            "paths are appended as the last two arguments)"
        )
    args = []
    for arg in command:
        for placeholder in _PLACEHOLDERS:
            arg = arg.replace(placeholder, values[placeholder])
        args.append(arg)
    if not has_in:
        args += [values["{input}"], values["{output}"]]
    return args


def _run_command(command: list[str], theta: np.ndarray, seed: int,
                 timeout: float | None) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="sbi-rounds-") as tmp:
        inp, outp = Path(tmp, "parameters.csv"), Path(tmp, "summaries.csv")
        np.savetxt(inp, theta, delimiter=",", fmt="%.9g")
        values = {"{input}": str(inp), "{output}": str(outp), "{seed}": str(seed),
                  "{n}": str(len(theta))}
        args = _command_args(command, values)
        env = {**os.environ, "SBI_ROUNDS_INPUT": str(inp), "SBI_ROUNDS_OUTPUT": str(outp),
               "SBI_ROUNDS_SEED": str(seed), "SBI_ROUNDS_N": str(len(theta))}
        try:
            proc = subprocess.run(args, capture_output=True, text=True, check=False, env=env,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SimulatorError(
                f"simulator command {shlex.join(args)} was killed after {timeout:g} s "
                "(cluster.chunk_timeout)"
            ) from None
        except OSError as e:
            raise SimulatorError(
                f"could not start simulator command {args[0]!r}: {e}; give the program by "
                "absolute path or put it on the workers' PATH"
            ) from None
        if proc.returncode != 0:
            raise SimulatorError(
                f"simulator command {shlex.join(args)} exited with status {proc.returncode}\n"
                f"stderr:\n{proc.stderr[-4000:]}"
            )
        if not outp.is_file():
            raise SimulatorError(
                f"simulator command {shlex.join(args)} exited with status 0 but wrote no "
                f"output file; it must write one CSV line of summaries per parameter line "
                f"to the output path"
            )
        try:
            return np.loadtxt(outp, delimiter=",", ndmin=2, comments="#")
        except ValueError as e:
            raise SimulatorError(
                f"simulator command {shlex.join(args)} wrote an output file that is not CSV "
                f"numbers with the same count on every line ({e}); see the file protocol in "
                "sbi_rounds.simulation"
            ) from None


def _announce_start() -> None:
    """Tell the driver (through a Dask event) that this worker started the current task."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return  # not running on a Dask worker
    worker.log_event(START_TOPIC, {"key": str(worker.get_current_task())})


def run_chunk(sim: SimulatorConfig, theta: np.ndarray, seed: int, x_dim: int,
              timeout: float | None = None) -> tuple[np.ndarray, float, str]:
    """Worker entry point: simulate one chunk.

    Args:
        sim: The simulator.
        theta: The chunk's parameters, with shape ``(n, D)``.
        seed: The chunk's seed.
        x_dim: The number of summaries ``K``.
        timeout: The chunk timeout; when set, the start is announced to the driver.

    Returns:
        ``(x, seconds, "host:pid")`` with ``x`` of shape ``(n, K)``.
    """
    if timeout is not None:
        _announce_start()
    t0 = time.perf_counter()
    x = call_simulator(sim, theta, seed, x_dim, timeout=timeout)
    return x, time.perf_counter() - t0, f"{os.uname().nodename}:{os.getpid()}"


# --- chunk sizes ------------------------------------------------------------------------
def choose_chunk_size(cluster: ClusterConfig, num_simulations: int,
                      seconds_per_simulation: float | None = None) -> int:
    """Simulations per chunk for a round of ``num_simulations``.

    * a number: that many (at most the round).
    * ``auto``: ``ceil(N / 64)``, at most 1000: about 64 chunks per round, which keeps up
      to 64 workers evenly busy and depends on ``N`` only, so a run gives the same
      simulations for any number of workers.
    * ``measure``: as ``auto``, but each chunk lasts at most about
      ``cluster.chunk_seconds`` at the measured speed, and fast simulators may go past
      1000 per chunk. The size depends on a timing, so a fresh run may pick another size
      (and so other simulations); it is stored with the round, and a resume reuses it.

    Args:
        cluster: Holds ``chunk_size`` and ``chunk_seconds``.
        num_simulations: The round's simulation count ``N``.
        seconds_per_simulation: The measured time of one simulation (``measure`` only).

    Raises:
        ValueError: ``measure`` without ``seconds_per_simulation``.
    """
    n = num_simulations
    even = -(-n // AUTO_CHUNKS)
    if isinstance(cluster.chunk_size, int):
        return max(1, min(cluster.chunk_size, n))
    if cluster.chunk_size == "auto":
        return max(1, min(MAX_AUTO_CHUNK_SIZE, even))
    if seconds_per_simulation is None or not seconds_per_simulation > 0:
        raise ValueError(
            "chunk_size='measure' needs the measured seconds per simulation (got "
            f"{seconds_per_simulation!r}); time the simulator with "
            "measure_seconds_per_simulation() first, or set chunk_size to a number or 'auto'"
        )
    by_time = int(cluster.chunk_seconds / seconds_per_simulation)
    return max(1, min(by_time, even))


def measure_seconds_per_simulation(sim: SimulatorConfig, theta: np.ndarray, *,
                                   x_dim: int | None, seed: int,
                                   budget: float = 1.0) -> float:
    """Time the simulator here on growing batches (1, 2, 4, ... rows of ``theta``).

    Stops once ``budget`` seconds were spent or the rows run out, and returns the time
    per simulation of the last (largest) batch, so import and warm-up costs of the
    first call do not count.

    Args:
        sim: The simulator.
        theta: Probe parameters, with shape ``(M, D)``; e.g. prior draws.
        x_dim: The expected number of summaries (None: any).
        seed: Seed of the probe simulations (their results are thrown away).
        budget: Seconds to spend at most (roughly; one batch may run past it).

    Returns:
        Seconds per simulation (> 0).
    """
    theta = np.asarray(theta)
    if theta.ndim != 2 or len(theta) == 0:
        raise ValueError(f"probe parameters must have shape (M, D) with M >= 1, got "
                         f"{theta.shape}")
    spent, k, per_sim = 0.0, 1, 0.0
    while True:
        t0 = time.perf_counter()
        call_simulator(sim, theta[:k], seed, x_dim)
        seconds = time.perf_counter() - t0
        spent += seconds
        per_sim = seconds / k
        if spent >= budget or k >= len(theta):
            return max(per_sim, 1e-9)
        k = min(2 * k, len(theta))


# --- sending a round to Dask ------------------------------------------------------------
class _Dispatch:
    """The state of one :func:`simulate_round` call: chunks queued, in flight and done."""

    def __init__(self, store: Any, round_: int, simulator: SimulatorConfig,
                 cluster: ClusterConfig, client: Any, run_seed: int) -> None:
        from sbi_rounds.cluster import expected_threads

        self.store, self.round, self.simulator = store, round_, simulator
        self.cluster, self.client, self.run_seed = cluster, client, run_seed
        self.info = store.round_info(round_)
        self.theta = store.read_theta(round_)
        self.pending = store.pending_chunks(round_)
        self.queue = list(reversed(self.pending))
        self.in_flight: dict[Any, int] = {}  # future -> chunk
        self.attempts: dict[int, int] = {}
        self.started: dict[str, float] = {}  # task key -> monotonic start (chunk_timeout)
        self.finished: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.expected = expected_threads(cluster)
        self.threads, self.threads_checked = 0, -1e9
        self.retries = 0
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
        """Send ``chunk`` (again) to the cluster."""
        a, b = self.info.chunk_bounds(chunk)
        self.attempts[chunk] = self.attempts.get(chunk, 0) + 1
        fut = self.client.submit(
            run_chunk, self.simulator, self.theta[a:b],
            derive_seed(self.run_seed, self.round, "simulate", chunk), self.info.x_dim,
            self.timeout,
            key=f"sbi-rounds-r{self.round}-c{chunk}-a{self.attempts[chunk]}-{os.getpid()}-"
                f"{time.time_ns()}",
            pure=False,
        )
        self.in_flight[fut] = chunk
        fut.add_done_callback(self._fetch)

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
        """Submit queued chunks until the in-flight limit is reached."""
        if not self.queue:
            return
        limit = self.limit()
        while self.queue and len(self.in_flight) < limit:
            self.submit(self.queue.pop())

    def fail(self, chunk: int, message: str) -> None:
        """Resubmit a failed chunk, or save it and raise once its retries are used up."""
        if self.attempts[chunk] <= self.cluster.retries:
            self.retries += 1
            log.warning("round %d chunk %d failed (attempt %d of %d), retrying: %s", self.round,
                        chunk, self.attempts[chunk], self.cluster.retries + 1,
                        message.splitlines()[0] if message else "")
            self.submit(chunk)
            return
        a, b = self.info.chunk_bounds(chunk)
        self.store.record_failure(self.round, chunk, self.theta[a:b], message)
        raise SimulationFailed(
            f"round {self.round}, chunk {chunk} (rows {a}-{b - 1}) failed "
            f"{self.attempts[chunk]} times; its parameters and the last error are saved in "
            f"{self.store.path} under rounds/{self.round:04d}/failures/{chunk}. "
            f"Last error:\n{message}",
            self.round, chunk,
        )

    def on_start(self, event: tuple[float, dict[str, Any]]) -> None:
        """Dask event handler (runs on the client's thread): a chunk started on a worker."""
        self.started[event[1]["key"]] = time.monotonic()

    def collect(self, wait: float) -> tuple[list[tuple[int, np.ndarray, float, str]],
                                             list[tuple[int, str]]]:
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
            if error is None:
                x, seconds, where = value
                results.append((self._forget(fut), x, seconds, where))
            else:
                failures.append((self._forget(fut), error))
        return results, failures

    def _forget(self, fut: Any) -> int:
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
        hung = [f for f in self.in_flight
                if now - self.started.get(str(f.key), now) > self.cut_after]
        if not hung:
            return []
        keys = {str(f.key) for f in hung}
        workers = [w for w, ks in self.client.processing().items() if keys & {str(k) for k in ks}]
        self.client.cancel(hung, force=True)
        if workers:
            # In the background: the retries go to other workers meanwhile.
            threading.Thread(target=_restart_workers, args=(self.client, workers),
                             name="sbi-rounds-restart-hung", daemon=True).start()
        message = (f"chunk timed out after {self.timeout:g} s (cluster.chunk_timeout); the "
                   f"worker running it ({', '.join(workers) or 'unknown'}) is being restarted")
        return [(self._forget(fut), message) for fut in hung]


def _restart_workers(client: Any, workers: list[str]) -> None:
    """Restart hung workers through their nannies (workers without one are removed)."""
    try:
        status = client.restart_workers(workers, timeout=300, raise_for_error=False)
    except Exception as e:  # noqa: BLE001 - a failed restart must not hide the timeout
        log.warning("could not restart hung worker(s) %s: %s", workers, e)
        return
    log.warning("restarted hung worker(s): %s", status)


def simulate_round(store: Any, round_: int, *, simulator: SimulatorConfig,
                   cluster: ClusterConfig, client: Any, run_seed: int,
                   progress: Callable[[int, int, float], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> SimulationReport:
    """Simulate every chunk of ``round_`` not yet committed, committing each as it finishes.

    The chunk layout is the one planned in the run file. At most ``max_in_flight``
    chunks (default: 2 per worker thread) are on the cluster at a time, so memory stays
    flat for any budget. Finished chunks are committed to the run file at once, in the
    order they finish. A chunk that fails (the simulator raised, or timed out after
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
    t_start = time.perf_counter()
    d = _Dispatch(store, round_, simulator, cluster, client, run_seed)
    info = d.info
    if d.pending and int(info.theta_done) < info.num_simulations:
        raise ValueError(
            f"round {round_} has {info.theta_done} of {info.num_simulations} parameter sets; "
            "sample them (stages.sample_proposal) before simulating"
        )
    total = info.num_simulations
    done = total - sum(info.chunk_bounds(c)[1] - info.chunk_bounds(c)[0] for c in d.pending)
    run_sims, chunks_run, stopped = 0, 0, False
    subscribed = False
    if d.timeout is not None and d.pending:
        client.subscribe_topic(START_TOPIC, d.on_start)
        subscribed = True
    # Finished chunks wait at most ``commit_interval`` seconds to be committed together.
    finished: list[tuple[int, np.ndarray, float, str]] = []
    last_commit = -math.inf

    def commit() -> None:
        nonlocal done, run_sims, chunks_run, last_commit
        if not finished:
            return
        batch = finished.copy()
        store.write_chunks(round_, [(chunk, x, seconds) for chunk, x, seconds, _ in batch])
        finished.clear()
        last_commit = time.perf_counter()
        for chunk, _, _, where in batch:
            a, b = info.chunk_bounds(chunk)
            done += b - a
            run_sims += b - a
            chunks_run += 1
            d.by_worker[where] = d.by_worker.get(where, 0) + 1
        if progress is not None:
            elapsed = last_commit - t_start
            progress(done, total, run_sims / elapsed if elapsed > 0 else 0.0)

    try:
        d.top_up()
        while d.in_flight:
            if should_stop is not None and should_stop():
                stopped = True
                break
            due = last_commit + cluster.commit_interval - time.perf_counter()
            results, failures = d.collect(wait=min(0.25, max(due, 0.0)) if finished else 0.25)
            finished.extend(results)
            for chunk, message in failures + d.hung():
                d.fail(chunk, message)
            d.top_up()
            if finished and (not d.in_flight or
                             time.perf_counter() - last_commit >= cluster.commit_interval):
                commit()
    finally:
        try:
            commit()  # what finished is kept, also when stopping or failing
        finally:
            if d.in_flight:
                client.cancel(list(d.in_flight), force=True)
            if subscribed:
                client.unsubscribe_topic(START_TOPIC)
    return SimulationReport(
        chunks_run=chunks_run,
        chunks_skipped=info.num_chunks - len(d.pending),
        simulations_run=run_sims,
        seconds=time.perf_counter() - t_start,
        retries=d.retries,
        stopped=stopped,
        chunks_by_worker=dict(d.by_worker),
    )
