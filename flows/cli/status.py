"""``sbi-rounds status [DIR]``: a run directory's runs, their rounds and stages, and which run.

Reads the run files only (no lock taken); a run is running when a live process holds its
lock file (``run.lock``), as the run itself checks.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["find_runs", "main", "run_status"]


def find_runs(target: Path) -> list[Path]:
    """The run files under ``target``: a run.h5, a run's directory, or a run directory."""
    if target.is_file():
        return [target]
    if (target / "run.h5").is_file():
        return [target / "run.h5"]
    return sorted(target.glob("*/run.h5"))


def run_status(path: Path) -> dict[str, Any]:
    """One run's status: id, method, rounds (asked, done), per-round stages, who runs it."""
    from sbi_rounds.lifecycle.locking import RunLock
    from sbi_rounds.report.table import round_table
    from sbi_rounds.simulation.ledger import committed_rows
    from sbi_rounds.store import RunStore, Stage

    holder = RunLock(path.parent / "run.lock").holder()
    store = RunStore.open(path)
    config = store.read_config()
    rows = round_table(store)
    damaged = store.damaged_rounds()  # named; the other rounds are read
    simulated: dict[int, str] = {}  # simulations committed so far, of the round's planned number
    for i, row in enumerate(rows):
        if row.round in damaged:
            rows[i], simulated[row.round] = row.model_copy(update={"stage": "damaged"}), "-"
            continue
        info = store.round_info(row.round)
        simulated[row.round] = f"{committed_rows(store, row.round)}/{info.num_simulations}"
    return {
        "run": path.parent.name,
        "path": str(path),
        "method": config.get("method"),
        "rounds": config.get("rounds"),
        "done": sum(1 for r in store.rounds() if store.stage(r) == Stage.DONE),
        "rows": rows,
        "simulated": simulated,
        "holder": holder,
        "damaged": damaged,
    }


def _holder_text(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "not running"
    since = holder.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "?"
    return f"running: PID {holder.get('pid', '?')} on {holder.get('host', '?')} since {when}"


def _format(status: dict[str, Any]) -> str:
    lines = [
        f"{status['run']}  ({status['method']}, {status['done']} of {status['rounds']} rounds "
        f"done, {_holder_text(status['holder'])})",
        f"  {status['path']}",
    ]
    from sbi_rounds.report.table import ROUND_COLUMNS

    # the round table's titles (the console's short ones); "simulated" is the status's own
    titles = {c.key: c.short or c.title for c in ROUND_COLUMNS}
    keys = ("round", "stage", "simulated", "valid", "epochs", "best_val_loss")
    header = tuple(titles.get(key, key) for key in keys)
    table = [header] + [
        (
            str(row.round),
            row.stage,
            status["simulated"][row.round],
            str(row.valid) if row.valid >= 0 else "-",
            "-" if row.epochs is None else str(row.epochs),
            "-" if row.best_val_loss is None else f"{row.best_val_loss:.4f}",
        )
        for row in status["rows"]
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in table:
        lines.append("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    if not status["rows"]:
        lines.append("  (no round planned yet)")
    for r, what in status.get("damaged", {}).items():
        lines.append(f"  round {r} is damaged: {what}")
    if status.get("damaged"):
        lines.append(f"  repair with: sbi-rounds verify {Path(status['path']).parent} --repair")
    return "\n".join(lines)


def parser(prog: str = "sbi-rounds status") -> argparse.ArgumentParser:
    """The status command line."""
    p = argparse.ArgumentParser(
        allow_abbrev=False,  # a shortened flag (--round for --rounds) is an error, not a guess
        prog=prog,
        description="Show the runs of a run directory (or one run): each round's stage, "
        "simulations, epochs and best validation loss, and whether a process is running "
        "the run now. Reads the run files only.",
    )
    p.add_argument(
        "target",
        nargs="?",
        default="runs",
        help="a run directory (--run-dir), a run's directory or its run.h5 (default: runs)",
    )
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "sbi-rounds status") -> int:
    """Print the status; returns 0, or 2 when there is no run to show."""
    from sbi_rounds.store import RunFileError

    args = parser(prog).parse_args(argv)
    runs = find_runs(Path(args.target))
    if not runs:
        print(f"error: no run under {args.target} (no */run.h5)", file=sys.stderr)
        return 2
    status = 0
    for i, path in enumerate(runs):
        if i:
            print()
        try:
            print(_format(run_status(path)))
        except (RunFileError, OSError, KeyError) as e:
            print(f"{path.parent.name}: cannot read {path}: {e}")
            status = 2
    return status
