"""The run session: lock the run, open or create its file, and check the settings still fit."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch.distributions import Distribution

from sbi_rounds.config import IDENTITY_FIELDS, RunConfig, config_differences
from sbi_rounds.environment import check_device, check_run_directory
from sbi_rounds.errors import CodeChangedError, ConfigMismatchError
from sbi_rounds.fingerprint import code_changes, code_fingerprint
from sbi_rounds.locking import RunLock
from sbi_rounds.priors import build_prior
from sbi_rounds.run import Run, resolve_run
from sbi_rounds.seeding import derive_seed, seeded
from sbi_rounds.simulation import SimulatorError, call_simulator
from sbi_rounds.store import RunStore, Stage

__all__ = ["open_run", "preflight", "probe_simulator", "run_session"]

log = logging.getLogger(__name__)


def probe_simulator(config: RunConfig, prior: Distribution) -> None:
    """Simulate two prior draws locally: catches import errors, wrong shapes and hangs early.

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
    result: dict[str, BaseException | None] = {}

    def probe() -> None:
        try:
            call_simulator(
                config.simulator,
                theta,
                derive_seed(config.seed, 0, "probe"),
                x_dim=len(config.xobs),
                timeout=timeout,
            )
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


def open_run(
    config: RunConfig,
    *,
    allow_changes: Sequence[str] = (),
    check_simulator: bool = True,
    accept_changed_code: bool = False,
    resimulate_invalid: bool = False,
) -> Run:
    """Create the run file, or open it and check the settings and the code still match.

    Settings in :data:`~sbi_rounds.config.IDENTITY_FIELDS` must match the file's unless
    named in ``allow_changes``; other changes (more rounds, training, cluster) are
    accepted and recorded in the file's ``config_history``. The simulator's and prior's
    code must match the fingerprint recorded (``sbi_rounds.fingerprint``) unless
    ``accept_changed_code``: then the change is recorded in the history and, for a changed
    simulator, the invalid rows of rounds not trained yet are simulated again, as they are
    with ``resimulate_invalid``. A run recorded before fingerprints existed gets one now.

    Raises:
        ConfigMismatchError: Identity settings differ; nothing in the file was touched.
        CodeChangedError: The code changed; nothing in the file was touched.
    """
    bad = [f for f in allow_changes if f not in IDENTITY_FIELDS]
    if bad:
        raise ValueError(f"allow_changes names {bad}; allowed: {list(IDENTITY_FIELDS)}")
    path = config.run_path
    new = config.model_dump(mode="json")
    if not path.exists():
        code = code_fingerprint(config.simulator, config.prior)
        store = RunStore.create(path, config=new, fingerprint=config.fingerprint(), code=code)
        try:
            run = resolve_run(config, store)
            if check_simulator:
                probe_simulator(config, run.prior)
        except ValueError:
            path.unlink(missing_ok=True)  # a bad prior or simulator leaves no run behind
            raise
        return run
    store = RunStore.open(path)
    store.check_intact()  # DamagedRunError names what is damaged, before anything is written
    old = store.read_config()
    _refuse_identity_changes(path, old, new, allow_changes)
    code_changes = _check_code(config, store, accept_changed_code)
    changes = [c for c in config_differences(old, new) if c.split(".")[0] != "run_id"]
    if changes:
        log.info("settings changed since the last session: %s", "; ".join(changes))
        store.update_config(new, changes)
    planned = store.rounds()
    if planned and any(c.startswith("simulations_per_round") for c in changes):
        log.warning(
            "simulations_per_round changed, but rounds %s are planned already and keep the "
            "simulations they have (%s); the new figure applies to rounds planned from now on",
            ", ".join(map(str, planned)),
            ", ".join(str(store.round_info(r).num_simulations) for r in planned),
        )
    if resimulate_invalid or any(c.startswith("simulator.") for c in code_changes):
        _reopen_invalid_rows(store)
    return resolve_run(config, store)


def _check_code(config: RunConfig, store: RunStore, accept: bool) -> list[str]:
    """Compare the code with the run's fingerprint; record it (a change only if accepted).

    Returns the accepted changes. Writes nothing when it raises.
    """
    code = code_fingerprint(config.simulator, config.prior)
    old = store.code_fingerprint()
    if old is None:  # a run file from before code fingerprints: record them from now on
        store.record_code_fingerprint(code, [])
        return []
    changes = code_changes(old, code)
    if not changes:
        return []
    if not accept:
        raise CodeChangedError(_code_changed_message(store, changes))
    log.warning("accepted changed code: %s", "; ".join(changes))
    store.record_code_fingerprint(code, [f"code: {c}" for c in changes])
    return changes


def _code_changed_message(store: RunStore, changes: list[str]) -> str:
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


def _reopen_invalid_rows(store: RunStore) -> None:
    """Simulate again the invalid rows of every round not yet appended for training (the
    round that stopped for too few valid simulations)."""
    for r in store.rounds():
        stage = store.stage(r)
        if stage is not None and Stage.SAMPLED <= stage < Stage.APPENDED:
            rows = store.reopen_invalid_chunks(r)
            if rows:
                log.warning("round %d: %d invalid rows will be simulated again", r, rows)


def preflight(
    config: RunConfig, *, allow_changes: Sequence[str] = (), accept_changed_code: bool = False
) -> None:
    """Find, writing nothing, what would stop :func:`run_session` as the run starts.

    Checks the training device, the run directory (writable, with free disk for the next
    round), the lock's holder, the run file (readable, an sbi-rounds run, a format version
    this code reads), its identity settings and the code's fingerprint; for a new run, the
    prior and the simulator on two prior draws. The command line calls it before Prefect
    and Dask start, so bad input fails within a second, with one line.

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
    RunLock(path.parent / "run.lock").check()
    if path.exists():
        store = RunStore.open(path)
        store.check_intact()
        check_run_directory(config, min(max(store.rounds(), default=0) + 1, config.rounds))
        _refuse_identity_changes(
            path, store.read_config(), config.model_dump(mode="json"), allow_changes
        )
        old = store.code_fingerprint()
        if old is not None and not accept_changed_code:
            changes = code_changes(old, code_fingerprint(config.simulator, config.prior))
            if changes:
                raise CodeChangedError(_code_changed_message(store, changes))
        return
    probe_simulator(config, build_prior(config.prior))


def _refuse_identity_changes(
    path: Path, old: dict[str, Any], new: dict[str, Any], allow_changes: Sequence[str]
) -> None:
    identity_changes = [
        line
        for k in IDENTITY_FIELDS
        if k not in allow_changes
        for line in config_differences({k: old.get(k)}, {k: new[k]})
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


@contextmanager
def run_session(
    config: RunConfig,
    *,
    allow_changes: Sequence[str] = (),
    check_simulator: bool = True,
    accept_changed_code: bool = False,
    resimulate_invalid: bool = False,
) -> Iterator[Run]:
    """Lock the run, clean up after killed commits, open it (:func:`open_run`), and release
    the lock at exit."""
    directory = config.run_path.parent
    with RunLock(directory / "run.lock") as lock:
        if lock.previous_holder and lock.previous_holder.get("pid"):
            log.warning(
                "took over the run from a process that ended without releasing it: %s",
                lock.previous_holder,
            )
        for stale in RunStore(config.run_path).remove_stale_temporaries():
            log.info("removed %s left by an interrupted commit", stale.name)
        yield open_run(
            config,
            allow_changes=allow_changes,
            check_simulator=check_simulator,
            accept_changed_code=accept_changed_code,
            resimulate_invalid=resimulate_invalid,
        )
