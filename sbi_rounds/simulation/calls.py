"""Calling a user's simulator on a chunk of parameters: Python functions and programs."""

from __future__ import annotations

import inspect
import os
import shlex
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbi_rounds.builders.imports import import_object
from sbi_rounds.config import SimulatorConfig
from sbi_rounds.seeding import seeded

__all__ = ["START_TOPIC", "SimulatorError", "call_simulator", "run_chunk"]

#: Dask event topic under which workers announce that a chunk started.
START_TOPIC = "sbi-rounds-chunk-started"
_PLACEHOLDERS = ("{input}", "{output}", "{seed}", "{n}")


class SimulatorError(RuntimeError):
    """The simulator raised, or returned something that is not ``(N, K)`` real numbers."""


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
        hint = (
            f"; xobs has {x_dim} values, so the simulator must return {x_dim} summaries "
            "per simulation"
            if x_dim is not None and x.ndim == 2 and x.shape[0] == n
            else ""
        )
        raise SimulatorError(
            f"simulator {path} returned shape {tuple(x.shape)} for {n} parameter sets; "
            f"expected {want}{hint}"
        )
    # float32 stays float32 (stored so, unless the run sets x_dtype); the rest is float64
    keep = x.dtype in (np.float32, np.float64)
    return x if keep else x.astype(np.float32 if x.dtype == np.float16 else np.float64)


def _accepts_seed(fn: Callable[..., Any]) -> bool:
    try:
        return "seed" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def call_simulator(
    sim: SimulatorConfig,
    theta: np.ndarray,
    seed: int,
    x_dim: int | None = None,
    *,
    timeout: float | None = None,
) -> np.ndarray:
    """Simulate a batch of parameters with every RNG seeded by ``seed``.

    Args:
        sim: The simulator and its kind.
        theta: Parameters, with shape ``(N, D)``.
        seed: The chunk's seed (below 2**63).
        x_dim: The expected number of summaries ``K`` (None: any).
        timeout: Seconds after which an external program is killed (``command`` only).

    Returns:
        The summaries, with shape ``(N, K)``: float32 when the simulator returned float32
        or float16, float64 otherwise; NaN or infinite rows are allowed.

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


def _run_command(
    command: list[str], theta: np.ndarray, seed: int, timeout: float | None
) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="sbi-rounds-") as tmp:
        inp, outp = Path(tmp, "parameters.csv"), Path(tmp, "summaries.csv")
        np.savetxt(inp, theta, delimiter=",", fmt="%.9g")
        values = {
            "{input}": str(inp),
            "{output}": str(outp),
            "{seed}": str(seed),
            "{n}": str(len(theta)),
        }
        args = _command_args(command, values)
        env = {
            **os.environ,
            "SBI_ROUNDS_INPUT": str(inp),
            "SBI_ROUNDS_OUTPUT": str(outp),
            "SBI_ROUNDS_SEED": str(seed),
            "SBI_ROUNDS_N": str(len(theta)),
        }
        try:
            proc = subprocess.run(
                args, capture_output=True, text=True, check=False, env=env, timeout=timeout
            )
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


def run_chunk(
    sim: SimulatorConfig, theta: np.ndarray, seed: int, x_dim: int, timeout: float | None = None
) -> tuple[np.ndarray, float, str]:
    """Worker entry point: simulate one chunk.

    Args:
        sim: The simulator.
        theta: The chunk's parameters, with shape ``(n, D)``.
        seed: The chunk's seed.
        x_dim: The number of summaries ``K``.
        timeout: The chunk timeout (an external program is killed after it).

    Returns:
        ``(x, seconds, "host:pid")`` with ``x`` of shape ``(n, K)``.
    """
    _announce_start()  # the driver times the chunk: for the timeout and to report stragglers
    t0 = time.perf_counter()
    x = call_simulator(sim, theta, seed, x_dim, timeout=timeout)
    return x, time.perf_counter() - t0, f"{os.uname().nodename}:{os.getpid()}"
