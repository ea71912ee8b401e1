"""Running simulations: calling user simulators, and sending chunks of a round to Dask.

Simulators come in three kinds (``SimulatorConfig.kind``):

* ``batched``: ``f(theta) -> x`` with ``theta`` of shape ``(N, D)`` and ``x`` of shape
  ``(N, K)``, numpy arrays or torch tensors.
* ``per_sample``: ``f(theta) -> x`` with shapes ``(D,)`` and ``(K,)``; called per row.
* ``command``: an external program. For each chunk it is run with the placeholders
  ``{input}``, ``{output}`` and ``{seed}`` in its arguments replaced (when no ``{input}``
  and ``{output}`` appear, the two paths are appended as the last two arguments). The
  input file is CSV text with one row of ``D`` parameters per simulation; the program
  writes the output file as CSV text with one row of ``K`` summaries per simulation, in
  the same order (``nan`` for a failed simulation). A non-zero exit status is an error.

Every chunk gets its own seed, derived from the run seed, the round and the chunk index,
so results do not depend on the number of workers or the order chunks finish in. Python
simulators should draw from numpy's or torch's global RNG (seeded per chunk), or accept a
``seed`` keyword argument.
"""

from __future__ import annotations

import inspect
import logging
import os
import shlex
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbi_rounds.config import ClusterConfig, SimulatorConfig
from sbi_rounds.imports import import_object
from sbi_rounds.seeding import derive_seed, seeded

__all__ = [
    "SimulationFailed",
    "SimulationReport",
    "SimulatorError",
    "call_simulator",
    "choose_chunk_size",
    "run_chunk",
    "simulate_round",
]

log = logging.getLogger(__name__)


class SimulatorError(RuntimeError):
    """The simulator raised, or returned something that is not ``(N, K)`` numbers."""


class SimulationFailed(RuntimeError):
    """A chunk kept failing after its retries; its parameters were saved in the run file."""

    def __init__(self, message: str, round_: int, chunk: int):
        super().__init__(message)
        self.round, self.chunk = round_, chunk


@dataclass(frozen=True, kw_only=True)
class SimulationReport:
    """What one call of :func:`simulate_round` did."""

    chunks_run: int
    chunks_skipped: int
    simulations_run: int
    seconds: float
    retries: int
    stopped: bool


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
                   x_dim: int | None = None) -> np.ndarray:
    """Simulate ``theta (N, D)`` with RNGs seeded by ``seed`` and return ``x (N, K)`` float64.

    Raises:
        SimulatorError: The simulator raised (with its traceback in the message), or its
            output has the wrong type or shape.
    """
    theta = np.asarray(theta, dtype=np.float32)
    n = theta.shape[0]
    if sim.kind == "command":
        return _check_output(_run_command(sim, theta, seed), n, x_dim, shlex.join(sim.command))
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


def _run_command(sim: SimulatorConfig, theta: np.ndarray, seed: int) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="sbi-rounds-") as tmp:
        inp, outp = Path(tmp, "parameters.csv"), Path(tmp, "summaries.csv")
        np.savetxt(inp, theta, delimiter=",", fmt="%.9g")
        args = [a.format(input=inp, output=outp, seed=seed) for a in sim.command]
        if not any("{input}" in a for a in sim.command):
            args += [str(inp), str(outp)]
        try:
            proc = subprocess.run(args, capture_output=True, text=True, check=False)
        except OSError as e:
            raise SimulatorError(f"could not start simulator command {args[0]!r}: {e}") from None
        if proc.returncode != 0:
            raise SimulatorError(
                f"simulator command {shlex.join(args)} exited with status {proc.returncode}\n"
                f"stderr:\n{proc.stderr[-4000:]}"
            )
        if not outp.is_file():
            raise SimulatorError(f"simulator command {shlex.join(args)} wrote no {outp.name}")
        return np.loadtxt(outp, delimiter=",", ndmin=2)


def run_chunk(sim: SimulatorConfig, theta: np.ndarray, seed: int,
              x_dim: int) -> tuple[np.ndarray, float, str]:
    """Worker entry point: simulate one chunk. Returns ``(x, seconds, hostname:pid)``."""
    t0 = time.perf_counter()
    x = call_simulator(sim, theta, seed, x_dim)
    return x, time.perf_counter() - t0, f"{os.uname().nodename}:{os.getpid()}"


def choose_chunk_size(cluster: ClusterConfig, num_simulations: int,
                      seconds_per_simulation: float | None = None) -> int:
    """Simulations per chunk for a round of ``num_simulations``.

    ``auto``: ``ceil(N / 20)``, at most 1000: about 20 chunks per round, the same for any
    number of workers (so results are reproducible across cluster sizes). ``measure``:
    enough simulations to last ``chunk_seconds`` at the measured speed.
    """
    if isinstance(cluster.chunk_size, int):
        return max(1, min(cluster.chunk_size, num_simulations))
    if cluster.chunk_size == "measure" and seconds_per_simulation:
        size = int(cluster.chunk_seconds / max(seconds_per_simulation, 1e-9))
        return max(1, min(size, num_simulations))
    return max(1, min(1000, -(-num_simulations // 20)))


def simulate_round(store: Any, round_: int, *, simulator: SimulatorConfig,
                   cluster: ClusterConfig, client: Any, run_seed: int,
                   progress: Callable[[int, int, float], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> SimulationReport:
    """Simulate every chunk of ``round_`` not yet committed, committing each as it finishes.

    At most ``max_in_flight`` chunks are queued at a time, so memory stays flat for any
    budget. A failing chunk (exception, lost worker, timeout) is resubmitted up to
    ``cluster.retries`` times, then its parameters and traceback are saved and
    :class:`SimulationFailed` is raised. On return or exception, chunks still in flight
    are cancelled; committed chunks are never simulated again.

    Args:
        progress: Called as ``progress(done, total, simulations_per_second)``.
        should_stop: Polled twice a second; True stops after cancelling in-flight chunks.
    """
    from distributed import wait

    from sbi_rounds.cluster import total_threads

    info = store.round_info(round_)
    pending = store.pending_chunks(round_)
    theta = store.read_theta(round_)
    total = info.num_simulations
    done = total - sum(info.chunk_bounds(c)[1] - info.chunk_bounds(c)[0] for c in pending)
    queue = list(reversed(pending))
    limit = cluster.max_in_flight or 2 * total_threads(client)
    in_flight: dict[Any, tuple[int, float]] = {}
    attempts: dict[int, int] = {}
    t_start = time.perf_counter()
    run_sims, retries, chunks_run, stopped = 0, 0, 0, False
    theta_by_chunk: dict[int, Any] = {}

    def submit(chunk: int) -> None:
        a, b = info.chunk_bounds(chunk)
        attempts[chunk] = attempts.get(chunk, 0) + 1
        # Scatter the chunk's parameters once; resubmissions reuse them.
        if chunk not in theta_by_chunk:
            theta_by_chunk[chunk] = theta[a:b]
        fut = client.submit(
            run_chunk, simulator, theta_by_chunk[chunk],
            derive_seed(run_seed, round_, "simulate", chunk), info.x_dim,
            key=f"simulate-r{round_}-c{chunk}-a{attempts[chunk]}-{os.getpid()}-{time.time_ns()}",
            pure=False,
        )
        in_flight[fut] = (chunk, time.monotonic())

    def fail(chunk: int, message: str) -> None:
        nonlocal retries
        if attempts[chunk] <= cluster.retries:
            retries += 1
            log.warning("round %d chunk %d failed (attempt %d of %d), retrying: %s", round_,
                        chunk, attempts[chunk], cluster.retries + 1, message.splitlines()[0])
            submit(chunk)
            return
        a, b = info.chunk_bounds(chunk)
        store.record_failure(round_, chunk, theta[a:b], message)
        raise SimulationFailed(
            f"round {round_}, chunk {chunk} (rows {a}-{b - 1}) failed {attempts[chunk]} times; "
            f"its parameters and the traceback are saved in {store.path} under "
            f"rounds/{round_:04d}/failures/{chunk}. Last error:\n{message}",
            round_, chunk,
        )

    try:
        while queue and len(in_flight) < limit:
            submit(queue.pop())
        while in_flight:
            if should_stop is not None and should_stop():
                stopped = True
                break
            try:
                finished = wait(list(in_flight), timeout=0.5, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                finished = set()
            for fut in finished:
                chunk, _ = in_flight.pop(fut)
                if fut.status == "finished":
                    x, seconds, _where = fut.result()
                    store.write_chunk(round_, chunk, x, seconds)
                    a, b = info.chunk_bounds(chunk)
                    done += b - a
                    run_sims += b - a
                    chunks_run += 1
                    theta_by_chunk.pop(chunk, None)
                    if progress is not None:
                        elapsed = time.perf_counter() - t_start
                        progress(done, total, run_sims / elapsed if elapsed > 0 else 0.0)
                    if queue:
                        submit(queue.pop())
                else:
                    error = fut.exception()
                    fail(chunk, str(error) if isinstance(error, SimulatorError)
                         else f"{type(error).__name__}: {error}")
            if cluster.chunk_timeout is not None:
                now = time.monotonic()
                for fut, (chunk, t0) in list(in_flight.items()):
                    if now - t0 > cluster.chunk_timeout:
                        in_flight.pop(fut)
                        _cut_hung(client, fut)
                        fail(chunk, f"chunk timed out after {cluster.chunk_timeout:g} s "
                                    "(chunk_timeout); the worker running it was restarted")
    finally:
        if in_flight:
            client.cancel(list(in_flight), force=True)
    return SimulationReport(
        chunks_run=chunks_run,
        chunks_skipped=info.num_chunks - len(pending),
        simulations_run=run_sims,
        seconds=time.perf_counter() - t_start,
        retries=retries,
        stopped=stopped,
    )


def _cut_hung(client: Any, future: Any) -> None:
    """Cancel a hung chunk and restart the worker stuck in it (its nanny starts a new one)."""
    processing = client.processing()
    workers = [w for w, keys in processing.items() if future.key in keys]
    client.cancel([future], force=True)
    if workers:
        try:
            client.restart_workers(workers, timeout=60, raise_for_error=False)
        except Exception as e:  # noqa: BLE001 - a failed restart must not hide the timeout
            log.warning("could not restart hung worker(s) %s: %s", workers, e)
