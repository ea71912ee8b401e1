"""The run report: ``python -m flows.report <run>``, and the ``run_report`` Prefect flow."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from prefect import flow, get_run_logger

from tasks.rounds import report_task

__all__ = ["main", "run_report"]


@flow(name="run_report", log_prints=True)
def run_report(run: str, output: str | None = None) -> str:
    """Write the self-contained HTML report of a run (from Prefect, e.g. a deployment).

    Args:
        run: The run's directory or its ``run.h5``.
        output: Where the report goes; default ``<run dir>/report.html``.

    Returns:
        The report's path.
    """
    path = report_task(run, output)
    get_run_logger().info("report: %s", path)
    return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``sbi-rounds report`` does the same)."""
    from flows.cli.report import main as report_main

    return report_main(argv, prog="python -m flows.report")


if __name__ == "__main__":
    sys.exit(main())
