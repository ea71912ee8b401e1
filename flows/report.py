"""The run report: ``python -m flows.report <run>``, and the ``run_report`` Prefect flow."""

from __future__ import annotations

import sys

if __name__ == "__main__":  # the command line's door (``sbi-rounds report`` does the same)
    from flows.cli.main import main

    sys.exit(main(["report", *sys.argv[1:]], prog="python -m flows.report"))

from prefect import flow, get_run_logger

from tasks.rounds import report_task

__all__ = ["run_report"]


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
