"""Checks before a run starts: what would stop it, found without writing anything.

:func:`preflight` is what the command line runs before Prefect and Dask start (bad input fails
within a second, with one line); :func:`probe_simulator` simulates two prior draws. Light to
import (no sbi) so that the command line can run it, and start the Dask cluster, before the
flow's heavy imports. What it found (:class:`Preflight`) goes to the flow, whose session
then does not probe the simulator again.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sbi_rounds.config import RunConfig, config_differences, identity_fields, identity_of
from sbi_rounds.config.run import OPTIONAL_IDENTITY_FIELDS
from sbi_rounds.errors import CodeChangedError, ConfigMismatchError
from sbi_rounds.lifecycle.environment import check_device, check_run_directory, check_run_writable
from sbi_rounds.lifecycle.fingerprint import code_changes, code_fingerprint
from sbi_rounds.lifecycle.locking import RunLock
from sbi_rounds.seeding import derive_seed, seeded
from sbi_rounds.simulation import SimulatorError, call_simulator
from sbi_rounds.store import RunStore

if TYPE_CHECKING:
    from torch.distributions import Distribution

__all__ = [
    "Preflight",
    "code_changed_message",
    "preflight",
    "probe_simulator",
    "refuse_identity_changes",
]


@dataclass(frozen=True)
class Preflight:
    """What :func:`preflight` found, for the run's session (so it probes nothing again).

    Attributes:
        run_file: The run file checked (``config.run_path``).
        simulated_dtype: For a new run, the dtype the simulator returned on two prior
            draws (numpy's ``dtype.str``, e.g. ``"<f4"``); None for an existing run.
    """

    run_file: str
    simulated_dtype: str | None = None

    def covers(self, config: RunConfig) -> bool:
        """Whether this is ``config``'s run file's result."""
        return self.run_file == str(config.run_path)


def probe_simulator(config: RunConfig, prior: Distribution) -> Any:
    """Simulate two prior draws locally: catches import errors, wrong shapes and hangs early;
    returns the dtype of the simulations (what a run stores them as, ``x_dtype`` auto).

    It runs under ``cluster.chunk_timeout`` (if set, else ``cluster.check_timeout``); a
    simulator still running then is left to itself in a daemon thread (an external
    program is killed).

    Raises:
        ValueError: The simulator failed or timed out; the message is its error's first
            line.
    """
    with seeded(derive_seed(config.seed, 0, "probe")):
        theta = prior.sample((2,)).numpy()
    timeout = config.cluster.chunk_timeout or config.cluster.check_timeout
    result: dict[str, Any] = {}

    def probe() -> None:
        try:
            x = call_simulator(
                config.simulator,
                theta,
                derive_seed(config.seed, 0, "probe"),
                x_dim=len(config.xobs),
                timeout=timeout,
            )
            result["dtype"] = x.dtype
            result["error"] = None
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = e

    thread = threading.Thread(target=probe, name="simulator-check", daemon=True)
    thread.start()
    thread.join(timeout)
    if "error" not in result:
        setting = "cluster.chunk_timeout" if config.cluster.chunk_timeout else "cluster."
        setting += "" if config.cluster.chunk_timeout else "check_timeout"
        raise ValueError(
            f"the simulator did not return within {timeout:g} s on 2 prior samples (the "
            f"start-up check, {setting}; --chunk-timeout S sets it). Check that it does "
            "not hang, or give it more time with --cluster.check-timeout S."
        )
    error = result["error"]
    if isinstance(error, SimulatorError):
        first = str(error).split("\nTraceback")[0]
        raise ValueError(f"the simulator failed a check on 2 prior samples: {first}") from None
    if error is not None:
        raise error
    return result["dtype"]


def preflight(
    config: RunConfig,
    *,
    allow_changes: Sequence[str] = (),
    accept_changed_code: bool = False,
    check_start: bool = True,
) -> Preflight:
    """Find, writing nothing, what would stop :func:`run_session` as the run starts.

    Checks the training device, the run directory (writable, with free disk for the next
    round), the lock's holder, the run file (readable, an sbi-rounds run, a format version
    this code reads), its identity settings and the code's fingerprint; for a new run, the
    prior, the simulator on two prior draws and the pairs of ``start_from`` (unless
    ``check_start`` is False: a campaign's shared round is made later). The command line
    calls it before Prefect and Dask start, so bad input fails within a second, in one line.
    After the checks it hands what it found to the flow (``online_inference(preflight=...)``):
    the session then does not build the prior and probe the simulator a second time.

    Returns:
        What it found: for a new run, the dtype the simulator returned.

    Raises:
        RunLockedError: Another live process holds the run.
        RunFileError: The run file cannot be used (``DamagedRunError``: parts of it are
            damaged).
        ConfigMismatchError: Identity settings differ from the file's.
        CodeChangedError: The simulator's or prior's code changed (unless accepted).
        ValueError: A bad prior or simulator (new runs).
    """
    path = config.run_path
    check_device(config.training.device)
    if not path.exists():
        check_run_directory(config, 1)  # before the lock: its directory may not be creatable
    else:
        check_run_writable(path.parent)  # a read-only run: one line, not the lock's OSError
    RunLock(path.parent / "run.lock").check()
    if path.exists():
        store = RunStore.open(path)
        store.check_intact()
        check_run_directory(config, min(max(store.rounds(), default=0) + 1, config.rounds))
        refuse_identity_changes(
            path, store.read_config(), config.model_dump(mode="json"), allow_changes
        )
        old = store.code_fingerprint()
        if old is not None and not accept_changed_code:
            changes = code_changes(old, code_fingerprint(config.simulator, config.prior))
            if changes:
                raise CodeChangedError(code_changed_message(store, changes))
        return Preflight(str(path))
    from sbi_rounds.builders.priors import build_prior  # sbi: only a new run needs it here

    prior = build_prior(config.prior)
    if config.start_from is not None and check_start:  # refused now, not after Dask starts
        from sbi_rounds.simulation.imported import read_start

        read_start(config, prior, int(prior.sample((1,)).shape[-1]))
    dtype = probe_simulator(config, prior)
    return Preflight(str(path), np.dtype(dtype).str)


def refuse_identity_changes(
    path: Path, old: dict[str, Any], new: dict[str, Any], allow_changes: Sequence[str]
) -> None:
    """Raise ``ConfigMismatchError`` if identity settings differ (unless allowed)."""
    before, after = identity_of(old, new["method"]), identity_of(new)
    identity_changes = [
        line
        for k in (*identity_fields(new["method"]), *OPTIONAL_IDENTITY_FIELDS)
        if k not in allow_changes
        for line in config_differences({k: before.get(k)}, {k: after.get(k)})
    ]
    if identity_changes:
        raise ConfigMismatchError(
            f"run {path.parent.name} was started with other settings:\n  "
            + "\n  ".join(identity_changes)
            + "\nNothing in the run file was changed. Either start a new run (add "
            "--run-id NEW_ID, or drop --run-id to get an id from the settings), or, if the "
            "change does not alter the results so far (e.g. a renamed simulator module), "
            "rerun with --allow-change "
            + " --allow-change ".join(
                sorted({c.split(".")[0].split(":")[0] for c in identity_changes})
            )
        )


def code_changed_message(store: RunStore, changes: list[str]) -> str:
    """Why a resume stops: the simulator's or prior's code changed; and the ways out."""
    return (
        f"run {store.path.parent.name}: the code of the simulator or prior changed since "
        "the run recorded it (the names in the settings are the same):\n  "
        + "\n  ".join(changes)
        + "\nNothing in the run file was changed. Either start a new run (add --run-id "
        "NEW_ID), or, if the rounds so far may stay as they are (e.g. a fix that does not "
        "change valid results), rerun with --accept-changed-code: the change is recorded "
        "in the run's history and the invalid rows of a round not trained yet are "
        "simulated again."
    )
