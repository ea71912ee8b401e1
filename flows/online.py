"""The ``online_inference`` flow: ``python -m flows.online --xobs ...`` or ``sbi-rounds run``.

Each round runs the stage tasks through ``sbi_rounds.stages.round.run_round`` (sample proposal ->
simulate on Dask -> append -> train -> build posterior -> checkpoint), then the posterior
checks; with ``diagnostics.stop_when_stable`` the run ends once the posterior stops
changing, and every run ends with its HTML report. The run file is the source of truth:
rerunning the same command continues where the last one stopped.

Stopping: a deployment's runner cancels with SIGTERM (``TerminationSignal`` here); a run
without a runner (the command line against a server) watches its own state
(``flows.cancellation``) and cancels the round's token. The command line is
``flows.cli``, the cluster start-up ``flows.cluster``.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "sbi_rounds")

if __name__ == "__main__":  # the command line's door, before the imports below (they take
    from flows.cli.main import main  # seconds): it starts Prefect's server and the cluster first

    sys.exit(main(["run", *sys.argv[1:]], prog="python -m flows.online"))

from typing import Any, Literal  # noqa: E402

from prefect import flow, get_run_logger  # noqa: E402
from prefect.exceptions import TerminationSignal  # noqa: E402
from prefect.states import Cancelled, State  # noqa: E402

from flows.artifacts import publish_round_table  # noqa: E402
from flows.cancellation import CancellationWatch  # noqa: E402
from flows.cluster import run_cluster  # noqa: E402
from flows.progress import progress_view, simulation_progress  # noqa: E402
from flows.publish import (  # noqa: E402
    diagnose_round,
    log_round,
    log_simulated,
    make_run_tracker,
    publish_round,
    stops_early,
    write_report,
)
from sbi_rounds.config import ALL_IDENTITY_FIELDS, RunConfig  # noqa: E402
from sbi_rounds.diagnostics import check_inputs, format_checks, round_alerts  # noqa: E402
from sbi_rounds.errors import RunInterrupted  # noqa: E402
from sbi_rounds.lifecycle.preflight import Preflight  # noqa: E402
from sbi_rounds.lifecycle.run import Run  # noqa: E402
from sbi_rounds.lifecycle.session import run_session  # noqa: E402
from sbi_rounds.report.table import format_round_table, round_line, round_table  # noqa: E402
from sbi_rounds.runtime.cancel import CancelToken  # noqa: E402
from sbi_rounds.runtime.progress import EpochProgress, ProgressView, observed_stages  # noqa: E402
from sbi_rounds.stages.round import run_round  # noqa: E402
from sbi_rounds.store import Stage  # noqa: E402
from sbi_rounds.training import TrackerCallback  # noqa: E402
from tasks import STAGE_TASKS  # noqa: E402

__all__ = ["online_inference"]


def _run_name() -> str:
    """The flow run's name (in the Prefect UI and a campaign's console): the run's id."""
    from prefect.runtime import flow_run

    try:
        config = flow_run.parameters["config"]
        if not isinstance(config, RunConfig):  # as a deployment's parameters came
            config = RunConfig.model_validate(config)
        return config.resolved_run_id
    except Exception:  # noqa: BLE001 - a name must not fail the run (its settings will, clearly)
        return str(flow_run.name)


@flow(name="online_inference", log_prints=True, flow_run_name=_run_name)
def online_inference(
    config: RunConfig,
    allow_changes: list[Literal[ALL_IDENTITY_FIELDS]] | None = None,  # type: ignore[valid-type]
    accept_changed_code: bool = False,
    resimulate_invalid: bool = False,
    preflight: Preflight | None = None,
) -> dict[str, Any] | State:
    """Run (or resume, or extend) a multi-round SBI run described by ``config``.

    Run it again with the same settings (or the same ``run_id``) to resume an interrupted
    or cancelled run; with more ``rounds`` to extend a finished one. Where the run is shows
    in the command line's live display, or else as a log line per stage at most every
    ``console.progress_interval`` seconds.

    Args:
        config: The run's settings: observation, method, rounds, simulations per round,
            simulator, prior, network, training, posterior sampling and the Dask cluster.
        allow_changes: Identity settings (e.g. ``["simulator"]``) allowed to differ from
            the run file's when resuming.
        accept_changed_code: Resume although the simulator's or prior's code changed (it is
            recorded in the run's history; invalid rows of an untrained round are redone).
        resimulate_invalid: Simulate again the invalid rows of a round not trained yet.
        preflight: What the command line's checks found before the flow started
            (``sbi_rounds.lifecycle.preflight.preflight``); the session then does not probe the
            simulator again. None (a deployment): the session checks.

    Returns:
        ``{"flow_run_id", "run_file", "run_dir", "rounds": [per-round rows], "pairplots":
        [...], "report": path or None, "stopped_early": reason or None}``; a ``Cancelled``
        state when the run was cancelled from Prefect without a runner.
    """
    logger = get_run_logger()
    token = CancelToken()
    run_id = config.resolved_run_id
    with (
        CancellationWatch.for_current_run(token) as watch,
        run_session(
            config,
            allow_changes=allow_changes or (),
            accept_changed_code=accept_changed_code,
            resimulate_invalid=resimulate_invalid,
            preflight=preflight,
        ) as run,
        run_cluster(run) as client,
    ):
        logger.info("run %s: run file %s", run_id, run.store.path)
        check_inputs(run)
        tracker = make_run_tracker(run)
        tracker.log_params(run.config.model_dump(mode="json"))
        view = progress_view(run)
        try:
            published, stopped_early = _rounds(run, client, tracker, token, view)
        except (RunInterrupted, TerminationSignal) as stop:
            if isinstance(stop, TerminationSignal):
                how = "stopped by SIGTERM (a cancellation from Prefect, or a kill)"
            elif watch.requested:
                how = f"cancelled from Prefect ({stop})"
            else:
                how = f"stopped ({stop})"
            logger.warning(
                "run %s %s. Everything committed is in %s; run the deployment or the command "
                "again with the same settings (run_id=%s) to resume.",
                run_id,
                how,
                run.store.path,
                run_id,
            )
            if not watch.requested:
                raise
            return Cancelled(message=f"Cancelled; resume with the same settings (run_id={run_id}).")
        finally:
            view.close()
            tracker.flush()
            tracker.close()
        return _finish(run, published, stopped_early)


def _rounds(
    run: Run, client: Any, tracker: Any, token: CancelToken, view: ProgressView
) -> tuple[bool, str | None]:
    """Run the rounds not done yet, check each, report it; returns (published, stop reason).

    A finished round is only checked again (checks added since, e.g. a reference).
    """
    logger = get_run_logger()
    published, epochs_before = False, 0
    for r in range(1, run.config.rounds + 1):
        if run.store.stage(r) == Stage.DONE:
            summary = run.store.training_summary(r)
            epochs_before += 0 if summary is None else summary.epochs
            view.stage(r, "checks")
            if diagnose_round(logger, tracker, run, r, client, token):  # checks added since
                publish_round(logger, run, r, log_round(tracker, run, r))
                published = True
        else:
            callbacks: list[Any] = [
                TrackerCallback(tracker, step_offset=epochs_before, log_params=False),
                EpochProgress(view),
            ]
            result = run_round(
                run,
                r,
                _waiting_for(client, view, r),
                token=token,
                callbacks=callbacks,
                progress=simulation_progress(view),
                table=observed_stages(STAGE_TASKS, view, r),
            )
            log_simulated(logger, result.stages.get("simulate"), r)
            view.stage(r, "checks")
            diagnose_round(logger, tracker, run, r, client, token)
            row = log_round(tracker, run, r)
            epochs_before += int(row.epochs or 0)
            logger.info("%s", round_line(row, run.config.rounds))
            for alert in round_alerts(run, r):
                logger.warning("%s", alert)
            publish_round(logger, run, r, row)
            published = True
        stopped_early = stops_early(logger, run, r)
        if stopped_early is not None:
            return published, stopped_early
    return published, None


def _waiting_for(client: Any, view: ProgressView, round_: int) -> Any:
    """``client``; when it is a function (the cluster still starting), one that says so."""
    if not callable(client):
        return client

    def wait() -> Any:
        view.stage(round_, "cluster")
        return client()

    return wait


def _is_subflow() -> bool:
    """Whether this flow run runs inside another (a campaign's observation)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return context is not None and context.flow_run.parent_task_run_id is not None


def _finish(run: Run, published: bool, stopped_early: str | None) -> dict[str, Any]:
    """Print the round table and the checks, write the report; the flow's result."""
    logger = get_run_logger()
    rows = round_table(run.store)
    if not published and rows:
        publish_round_table(logger, run.config.resolved_run_id, rows)
    tables = "\n" + format_round_table(rows) + "\n\nposterior checks:\n" + format_checks(run)
    if _is_subflow():  # a campaign's run: the campaign's summary table shows them all
        logger.debug(tables)
    else:
        print(tables)
    if stopped_early is not None:
        print(f"\n{stopped_early}")
    from prefect.runtime import flow_run

    return {
        "flow_run_id": flow_run.id,
        "run_file": str(run.store.path),
        "run_dir": str(run.directory),
        "rounds": [row.model_dump() for row in rows],  # the flow's result is plain data
        "pairplots": sorted(str(p) for p in run.layout.figures.glob("round_*_pairplot.png")),
        "report": write_report(logger, run),
        "stopped_early": stopped_early,
    }
