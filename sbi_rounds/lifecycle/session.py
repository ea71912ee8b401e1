"""The run session: lock the run, open or create its file, and check the settings still fit."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sbi_rounds.config import ALL_IDENTITY_FIELDS, RunConfig, config_differences
from sbi_rounds.errors import CodeChangedError
from sbi_rounds.lifecycle.fingerprint import code_changes, code_fingerprint
from sbi_rounds.lifecycle.locking import RunLock, holder_text
from sbi_rounds.lifecycle.preflight import (
    Preflight,
    code_changed_message,
    probe_simulator,
    refuse_identity_changes,
)
from sbi_rounds.lifecycle.run import Run, resolve_run
from sbi_rounds.simulation.ledger import committed_rows, reopen_invalid
from sbi_rounds.store import RunStore
from sbi_rounds.store.layout import RunLayout

__all__ = ["open_run", "run_session"]

log = logging.getLogger(__name__)


def open_run(
    config: RunConfig,
    *,
    allow_changes: Sequence[str] = (),
    check_simulator: bool = True,
    accept_changed_code: bool = False,
    resimulate_invalid: bool = False,
    preflight: Preflight | None = None,
) -> Run:
    """Create the run file, or open it and check the settings and the code still match.

    Settings in :func:`~sbi_rounds.config.identity_fields` must match the file's unless
    named in ``allow_changes``; other changes (more rounds, training, cluster) are
    accepted and recorded in the file's ``config_history``. The simulator's and prior's
    code must match the fingerprint recorded (``sbi_rounds.lifecycle.fingerprint``) unless
    ``accept_changed_code``: then the change is recorded in the history and, for a changed
    simulator, the invalid rows of rounds not trained yet are simulated again, as they are
    with ``resimulate_invalid``. A run recorded before fingerprints existed gets one now.
    A new run's simulator is probed on two prior draws (``check_simulator``) unless
    ``preflight`` (the command line's :func:`~sbi_rounds.lifecycle.preflight.preflight`) did it.

    Raises:
        ConfigMismatchError: Identity settings differ; nothing in the file was touched.
        CodeChangedError: The code changed; nothing in the file was touched.
    """
    bad = [f for f in allow_changes if f not in ALL_IDENTITY_FIELDS]
    if bad:
        raise ValueError(f"allow_changes names {bad}; allowed: {list(ALL_IDENTITY_FIELDS)}")
    path = config.run_path
    new = config.model_dump(mode="json")
    if not path.exists():
        code = code_fingerprint(config.simulator, config.prior)
        store = RunStore.create(
            path,
            config=new,
            fingerprint=config.fingerprint(),
            code=code,
            bulk_folder=RunLayout.of(path.parent).bulk_folder,
        )
        try:
            run = resolve_run(config, store)
            dtype = preflight.simulated_dtype if preflight and preflight.covers(config) else None
            if dtype is None and check_simulator:
                dtype = probe_simulator(config, run.prior)
            if dtype is not None:  # the first round's simulations are allocated in it
                store.note_simulated_dtype(dtype)
        except ValueError:
            path.unlink(missing_ok=True)  # a bad prior or simulator leaves no run behind
            raise
        return run
    store = RunStore.open(path)
    store.check_intact()  # DamagedRunError names what is damaged, before anything is written
    old = store.read_config()
    refuse_identity_changes(path, old, new, allow_changes)
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
        reopen_invalid(store)
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
        raise CodeChangedError(code_changed_message(store, changes))
    if any(c.startswith("simulator.") for c in changes):
        reopen_invalid(store)  # before saying which rounds mix the two codes
    mixed = mixed_code_rounds(store, changes)
    log.warning("accepted changed code: %s; %s", "; ".join(changes), mixed)
    store.record_code_fingerprint(code, [*(f"code: {c}" for c in changes), mixed])
    return changes


def mixed_code_rounds(store: RunStore, changes: Sequence[str]) -> str:
    """Which round now mixes results of the old and the new code, for a person.

    A changed simulator: the round partly simulated (its committed chunks are the old
    code's, the rest, with invalid rows reopened, will be the new code's), else the first
    round still to simulate. A changed prior: the rounds planned so far drew from the old
    one.
    """
    rounds = store.rounds()
    parts = []
    if any(c.startswith("simulator.") for c in changes):
        partial, fresh = None, None
        for r in rounds:
            info = store.round_info(r)
            todo = info.num_simulations - committed_rows(store, r)
            if 0 < todo < info.num_simulations and partial is None:
                partial = (r, info.num_simulations - todo, todo)
            elif todo == info.num_simulations and fresh is None:
                fresh = r
        if partial is not None:
            r, old, new = partial
            parts.append(
                f"round {r} now mixes simulations of the old code ({old} committed) and of "
                f"the new ({new} still to simulate)"
            )
        else:
            first = fresh if fresh is not None else max(rounds, default=0) + 1
            parts.append(
                f"{_rounds(1, first - 1)} simulated with the old code, round {first} on "
                "with the new"
                if first > 1
                else "no simulation was committed yet: all are the new code's"
            )
    if any(c.startswith("prior.") for c in changes) and rounds:
        parts.append(
            f"{_rounds(rounds[0], rounds[-1])} drew their parameters with the old prior's "
            f"code, round {rounds[-1] + 1} on with the new"
        )
    return "; ".join(parts) or "no round was planned yet: all results are the new code's"


def _rounds(first: int, last: int) -> str:
    """``round 1 was`` or ``rounds 1-3 were``."""
    return f"round {first} was" if first == last else f"rounds {first}-{last} were"


@contextmanager
def run_session(
    config: RunConfig,
    *,
    allow_changes: Sequence[str] = (),
    check_simulator: bool = True,
    accept_changed_code: bool = False,
    resimulate_invalid: bool = False,
    preflight: Preflight | None = None,
) -> Iterator[Run]:
    """Lock the run, clean up after killed commits, open it (:func:`open_run`), and release
    the lock at exit.

    Args:
        config: The run's settings; ``config.run_path`` is its run file.
        allow_changes: Identity settings that may differ from the stored ones
            (``--allow-change``).
        check_simulator: Run a new run's simulator on its first inputs (the start-up check).
        accept_changed_code: Resume although the simulator's or prior's code changed.
        resimulate_invalid: Simulate the invalid rows of rounds not yet trained again.
        preflight: What the command line's preflight found (a new run's simulator is then
            not probed again).

    Yields:
        The open run, for :func:`sbi_rounds.stages.round.run_round` and the stages.

    Raises:
        RunLockedError: Another process holds the run.

    Examples:
        ```python
        config = RunConfig(xobs=[0.5, -0.3], rounds=2, simulations_per_round=500)
        with run_session(config) as run, open_client(config.cluster) as client:
            for r in range(1, config.rounds + 1):
                run_round(run, r, client)
        ```
    """
    directory = config.run_path.parent
    with RunLock(directory / "run.lock") as lock:
        if lock.previous_holder and lock.previous_holder.get("pid"):
            log.warning(
                "took over the run from a process that ended without releasing it (%s)",
                holder_text(lock.previous_holder),
            )
        for stale in RunStore(config.run_path).remove_stale_temporaries():
            log.info("removed %s left by an interrupted commit", stale.name)
        yield open_run(
            config,
            allow_changes=allow_changes,
            check_simulator=check_simulator,
            accept_changed_code=accept_changed_code,
            resimulate_invalid=resimulate_invalid,
            preflight=preflight,
        )
