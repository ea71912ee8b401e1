"""What the flow reports about a round: tracker metrics, Prefect artifacts, checks, report."""

from __future__ import annotations

import logging
from typing import Any

from flows.artifacts import publish_posterior, publish_report_link, publish_round_table
from sbi_rounds.diagnostics import (
    check_metrics,
    checks_due,
    describe_checks,
    round_alerts,
    stop_reason,
)
from sbi_rounds.lifecycle.run import Run
from sbi_rounds.lifecycle.stage import StageResult
from sbi_rounds.report.table import RoundRow, round_table
from sbi_rounds.runtime.cancel import CancelToken
from sbi_rounds.stages.simulate import Simulated
from tasks.rounds import diagnose_task, report_task

__all__ = [
    "diagnose_round",
    "log_round",
    "log_simulated",
    "make_run_tracker",
    "publish_round",
    "stops_early",
    "write_report",
]


def make_run_tracker(run: Run) -> Any:
    """The run's training-metrics tracker (``logger`` settings), under the run's directory."""
    from sbi_rounds.training.trackers import make_tracker

    return make_tracker(run.config.logger, run.directory, run.directory.name)


def log_round(tracker: Any, run: Run, round_: int) -> RoundRow:
    """Send the round's row of the round table to the tracker; returns the row."""
    row = next(r for r in round_table(run.store) if r.round == round_)
    metrics = {
        "round/simulations": row.simulations,
        "round/valid": row.valid,
        "round/epochs": row.epochs,
        "round/best_val_loss": row.best_val_loss,
        **{f"round/{k}": v for k, v in row.model_dump().items() if k.endswith("_s")},
    }
    tracker.log_metrics({k: float(v) for k, v in metrics.items() if v is not None}, step=round_)
    return row


def publish_round(logger: Any, run: Run, round_: int, row: RoundRow) -> None:
    """The round's table and posterior artifacts, read back from the run file."""
    run_id = run.config.resolved_run_id
    publish_round_table(logger, run_id, round_table(run.store))
    posterior = run.store.posterior_summary(round_)
    pairplot = None if posterior is None else posterior.pairplot
    publish_posterior(
        logger,
        run_id,
        round_,
        rounds=run.config.rounds,
        summary={} if posterior is None else posterior.parameters,
        xobs=run.config.xobs,
        row=row,
        pairplot=None if pairplot is None else run.directory / pairplot,
        run_file=run.store.path,
        diagnostics=run.store.diagnostics(round_),
        calibration=run.store.calibration(1) if round_ == 1 else None,
        warnings=round_alerts(run, round_),
    )


def diagnose_round(
    logger: Any, tracker: Any, run: Run, round_: int, client: Any, token: CancelToken
) -> bool:
    """Run the round's posterior checks (what is not committed yet) and report them.

    Returns:
        Whether anything was computed (False: every check was committed before).
    """
    if not checks_due(run, round_):
        return False
    token.check(f"checking the posterior of round {round_}")
    diagnose_task(run, round_, client, token.is_set)
    logger.info("round %d checks: %s", round_, describe_checks(run, round_))
    tracker.log_metrics(check_metrics(run, round_), step=round_)
    return True


def stops_early(logger: Any, run: Run, round_: int) -> str | None:
    """The reason to end the run after ``round_`` (stopping rule), or None to go on."""
    reason = stop_reason(run, round_)
    if reason is None:
        return None
    logger.info(
        "%s. To run the remaining rounds anyway, rerun without --stop-when-stable "
        "(diagnostics.stop_when_stable=false).",
        reason,
    )
    return reason


def write_report(logger: Any, run: Run) -> str | None:
    """Write the run's HTML report; a failure is a warning (the run file has everything)."""
    try:
        path = report_task(run.store.path)
    except Exception as e:  # noqa: BLE001 - the report is a view of the finished run file
        logger.warning(
            "could not write the run report (%s: %s); write it later with: "
            "python -m flows.report %s",
            type(e).__name__,
            e,
            run.directory,
        )
        return None
    logger.debug("report: %s", path)
    publish_report_link(logger, run.config.resolved_run_id, path)
    return str(path)


def log_simulated(logger: Any, result: StageResult[Simulated] | None, round_: int) -> None:
    """Log what the simulate stage of ``round_`` did (nothing when it was skipped): at INFO
    when it resumed or retried chunks, else at DEBUG (the round's line says the rest)."""
    d = None if result is None else result.details
    if d is not None:
        level = logging.INFO if d.chunks_skipped or d.retries else logging.DEBUG
        logger.log(
            level,
            "round %d simulated: %d chunk(s) run (%d simulations), %d chunk(s) committed "
            "before and skipped, %d chunk retries",
            round_,
            d.chunks_run,
            d.simulations_run,
            d.chunks_skipped,
            d.retries,
        )
