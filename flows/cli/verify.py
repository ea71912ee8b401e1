"""``sbi-rounds verify RUN [--repair]``: name what is damaged in a run file, and repair it."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sbi_rounds.store import RunStore

__all__ = ["main", "parser"]


def parser(prog: str = "sbi-rounds verify") -> argparse.ArgumentParser:
    """The command line of ``verify``."""
    p = argparse.ArgumentParser(
        allow_abbrev=False,  # a shortened flag (--round for --rounds) is an error, not a guess
        prog=prog,
        description="Read every group and dataset of a run file and check the datasets' "
        "checksums: exit status 0 when all is intact, 1 naming what is damaged (round 2's "
        "network weights, ...), 2 when there is no run file. Without --repair it only reads, "
        "and takes no lock. To repair a damaged run: sbi-rounds verify RUN --repair writes the "
        "file again without its damaged parts, with the stage of their rounds set back; then "
        "rerun the run's command (the same sbi-rounds run ...) and it recomputes them "
        "(training, posterior samples and checks from the round's simulations; simulations "
        "and parameters from their seeds).",
    )
    p.add_argument("run", help="the run's directory or its run.h5")
    p.add_argument(
        "--repair",
        action="store_true",
        help="replace a damaged run file (atomically) by a copy without the damaged parts, "
        "to be recomputed by the next run; takes the run's lock, and leaves an intact file "
        "untouched (exit status 0 repaired or intact, 1 damage it cannot repair)",
    )
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "sbi-rounds verify") -> int:
    """Command-line entry point. Returns the exit status (0 intact or repaired, 1 damaged,
    2 no run or held by another process)."""
    from sbi_rounds.store import RunFileError, RunStore
    from sbi_rounds.store.damage import damage_message

    args = parser(prog).parse_args(argv)
    target = Path(args.run)
    path = target / "run.h5" if target.is_dir() else target
    t0 = time.perf_counter()
    try:
        store = RunStore.open(path)
    except RunFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    damage = store.verify()
    if not damage:
        size = store.data_bytes() / 1e6  # with its round files
        print(f"{path}: intact ({size:.1f} MB read in {time.perf_counter() - t0:.2f} s)")
        return 0
    if not args.repair:
        print(f"error: {damage_message(path, damage)}", file=sys.stderr)
        return 1
    return _repair(store)


def _simulator_problem(store: RunStore) -> str | None:
    """Why the run's simulator cannot simulate again what it simulated (None: it can, as
    far as can be told without importing or running it)."""
    from sbi_rounds.config import SimulatorConfig
    from sbi_rounds.lifecycle.fingerprint import simulator_unavailable

    try:
        simulator = SimulatorConfig(**store.read_config()["simulator"])
    except (KeyError, TypeError, ValueError):  # settings of another version: the resume checks
        return None
    return simulator_unavailable(simulator, store.code_fingerprint())


def _repair(store: RunStore) -> int:
    """Repair a damaged run file under the run's lock; the exit status."""
    from sbi_rounds.lifecycle.environment import is_disk_error
    from sbi_rounds.lifecycle.locking import RunLock, RunLockedError
    from sbi_rounds.store import RunFileError

    path = store.path
    try:
        with RunLock(path.parent / "run.lock"):
            store.remove_stale_temporaries()
            lines = store.repair(simulator_problem=lambda: _simulator_problem(store))
    except RunLockedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunFileError as e:  # damage it cannot repair; nothing was changed
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (OSError, RuntimeError, ValueError) as e:  # h5py reports a full disk as these
        if not is_disk_error(e):
            raise
        free = shutil.disk_usage(path.parent).free
        print(
            f"error: could not write the repaired copy of {path}: {' '.join(str(e).split())} "
            f"({free / 1e6:.1f} MB free in {path.parent}, about {path.stat().st_size / 1e6:.1f}"
            " MB needed for the copy). Nothing was changed; make room, then repair again.",
            file=sys.stderr,
        )
        return 1
    print(f"{path}: repaired (the damaged file was replaced by a new copy):")
    for line in lines:
        print(f"  {line}")
    print(
        "Rerun the run's command (the same sbi-rounds run ..., with its --run-id) to "
        "recompute them. The repair is recorded in the run's history."
    )
    return 0
