"""``sbi-rounds verify RUN``: read a whole run file and name what is damaged."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "parser"]


def parser(prog: str = "sbi-rounds verify") -> argparse.ArgumentParser:
    """The command line of ``verify``."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Read every group and dataset of a run file and check the datasets' "
        "checksums: exit status 0 when all is intact, 1 naming what is damaged (round 2's "
        "network weights, ...), 2 when there is no run file. Reads only; takes no lock.",
    )
    p.add_argument("run", help="the run's directory or its run.h5")
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "sbi-rounds verify") -> int:
    """Command-line entry point. Returns the exit status (0 intact, 1 damaged, 2 no run)."""
    from sbi_rounds.store import RunFileError, RunStore
    from sbi_rounds.store.checksums import damage_message

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
    if damage:
        print(f"error: {damage_message(path, damage)}", file=sys.stderr)
        return 1
    size = path.stat().st_size / 1e6
    print(f"{path}: intact ({size:.1f} MB read in {time.perf_counter() - t0:.2f} s)")
    return 0
