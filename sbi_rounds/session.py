"""The run session: lock the run, open or create its file, and check the settings still fit."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch.distributions import Distribution

from sbi_rounds.config import IDENTITY_FIELDS, RunConfig, config_differences
from sbi_rounds.errors import ConfigMismatchError
from sbi_rounds.locking import RunLock
from sbi_rounds.priors import build_prior
from sbi_rounds.run import Run, resolve_run
from sbi_rounds.seeding import derive_seed, seeded
from sbi_rounds.simulation import SimulatorError, call_simulator
from sbi_rounds.store import RunStore

__all__ = ["open_run", "preflight", "probe_simulator", "run_session"]

log = logging.getLogger(__name__)


def probe_simulator(config: RunConfig, prior: Distribution) -> None:
    """Simulate two prior draws locally: catches import errors and wrong shapes early.

    Raises:
        ValueError: The simulator failed; the message is its error's first line.
    """
    with seeded(derive_seed(config.seed, 0, "probe")):
        theta = prior.sample((2,)).numpy()
    try:
        call_simulator(
            config.simulator, theta, derive_seed(config.seed, 0, "probe"), x_dim=len(config.xobs)
        )
    except SimulatorError as e:
        first = str(e).split("\nTraceback")[0]
        raise ValueError(f"the simulator failed a check on 2 prior samples: {first}") from None


def open_run(
    config: RunConfig, *, allow_changes: Sequence[str] = (), check_simulator: bool = True
) -> Run:
    """Create the run file, or open it and check the settings still match.

    Settings in :data:`~sbi_rounds.config.IDENTITY_FIELDS` must match the file's unless
    named in ``allow_changes``; other changes (more rounds, training, cluster) are
    accepted and recorded in the file's ``config_history``.

    Raises:
        ConfigMismatchError: Identity settings differ; nothing in the file was touched.
    """
    bad = [f for f in allow_changes if f not in IDENTITY_FIELDS]
    if bad:
        raise ValueError(f"allow_changes names {bad}; allowed: {list(IDENTITY_FIELDS)}")
    path = config.run_path
    new = config.model_dump(mode="json")
    if not path.exists():
        store = RunStore.create(path, config=new, fingerprint=config.fingerprint())
        try:
            run = resolve_run(config, store)
            if check_simulator:
                probe_simulator(config, run.prior)
        except ValueError:
            path.unlink(missing_ok=True)  # a bad prior or simulator leaves no run behind
            raise
        return run
    store = RunStore.open(path)
    old = store.read_config()
    _refuse_identity_changes(path, old, new, allow_changes)
    changes = [c for c in config_differences(old, new) if c.split(".")[0] != "run_id"]
    if changes:
        log.info("settings changed since the last session: %s", "; ".join(changes))
        store.update_config(new, changes)
    return resolve_run(config, store)


def preflight(config: RunConfig, *, allow_changes: Sequence[str] = ()) -> None:
    """Find, writing nothing, what would stop :func:`run_session` as the run starts.

    Checks the lock's holder, the run file (readable, an sbi-rounds run, a format version
    this code reads) and its identity settings; for a new run, the prior and the simulator
    on two prior draws. The command line calls it before Prefect and Dask start, so bad
    input fails within a second, with one line.

    Raises:
        RunLockedError: Another live process holds the run.
        RunFileError: The run file cannot be used.
        ConfigMismatchError: Identity settings differ from the file's.
        ValueError: A bad prior or simulator (new runs).
    """
    path = config.run_path
    RunLock(path.parent / "run.lock").check()
    if path.exists():
        store = RunStore.open(path)
        _refuse_identity_changes(
            path, store.read_config(), config.model_dump(mode="json"), allow_changes
        )
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
    config: RunConfig, *, allow_changes: Sequence[str] = (), check_simulator: bool = True
) -> Iterator[Run]:
    """Lock the run, clean up after killed commits, open it, and release the lock at exit."""
    directory = config.run_path.parent
    with RunLock(directory / "run.lock") as lock:
        if lock.previous_holder and lock.previous_holder.get("pid"):
            log.warning(
                "took over the run from a process that ended without releasing it: %s",
                lock.previous_holder,
            )
        for stale in RunStore(config.run_path).remove_stale_temporaries():
            log.info("removed %s left by an interrupted commit", stale.name)
        yield open_run(config, allow_changes=allow_changes, check_simulator=check_simulator)
