"""``sbi-rounds report RUN`` (and ``python -m flows.report``): a run's HTML report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "parser"]


def parser(prog: str = "sbi-rounds report") -> argparse.ArgumentParser:
    """The report's command line."""
    p = argparse.ArgumentParser(
        allow_abbrev=False,  # a shortened flag (--round for --rounds) is an error, not a guess
        prog=prog,
        description="Write the self-contained HTML report of a run (finished or not): "
        "settings, per-round table with seconds per stage, loss curves, posterior summaries "
        "with MAP and pairplots per round, posterior predictive checks, how the posterior "
        "moved, C2ST against reference samples and calibration. Figures are embedded, so "
        "the one file can be mailed or archived. Reads the run file only (no lock, no "
        "Prefect server).",
    )
    p.add_argument("run", help="the run's directory or its run.h5")
    p.add_argument(
        "-o", "--output", help="where the report goes (default: <run dir>/report/report.html)"
    )
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "sbi-rounds report") -> int:
    """Command-line entry point. Returns the exit status (0 written, 2 no readable run)."""
    from flows.cli.outputs import cannot_write
    from sbi_rounds.report.document import write_report
    from sbi_rounds.store import RunFileError, RunStore
    from sbi_rounds.store.layout import RunLayout

    args = parser(prog).parse_args(argv)
    target = Path(args.run)
    if target.is_dir() and not (target / "run.h5").is_file():
        print(
            f"error: {target} holds no run.h5; give a run's directory or its run.h5",
            file=sys.stderr,
        )
        return 2
    directory = target if target.is_dir() else target.parent
    output = Path(args.output) if args.output else RunLayout.of(directory).report
    why = cannot_write(output)
    if why is not None:
        print(
            f"error: cannot write the report to {output} ({why}); give a writable place "
            f"with -o FILE.html (sbi-rounds report {args.run} -o report.html)",
            file=sys.stderr,
        )
        return 2
    try:
        RunStore.open(target / "run.h5" if target.is_dir() else target).check_intact()
        path = write_report(target, output)
    except (RunFileError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0
