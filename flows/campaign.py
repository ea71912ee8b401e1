"""The ``campaign`` flow: one ``online_inference`` subflow per observation of a table.

``sbi-rounds campaign --observations table.csv [shared settings]`` runs it, or a deployment
(``deployments/prefect.yaml``). The runs share this process's Prefect server and one Dask
cluster; at most ``campaign.max_concurrent`` are in progress at once, each in a thread:
one trains while the others wait for their simulations (``sbi_rounds.runtime.concurrency``), so
each result is the one a separate run of that observation gives. With
``campaign.shared_first_round`` one run simulates round 1 first and every observation's run
starts from it (``start_from``). Each observation has its own run file, so running the
campaign again skips finished observations and resumes the others mid-round. It ends with
the summary: a table and ``<directory>/summary.html``.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Sequence
from typing import Any

if __name__ == "__main__":  # the command line's door, before the imports below (they take
    from flows.cli.main import main  # seconds; ``sbi-rounds campaign`` does the same)

    sys.exit(main(["campaign", *sys.argv[1:]], prog="python -m flows.campaign"))

from prefect import flow, get_run_logger

from flows.cluster import shared_cluster
from flows.online import online_inference
from sbi_rounds.campaign import (
    RUN_THREAD_PREFIX,
    format_summary,
    is_finished,
    observation_configs,
    shared_round_config,
    summarize,
    write_summary_html,
)
from sbi_rounds.config import CampaignConfig, RunConfig
from sbi_rounds.lifecycle.preflight import Preflight
from sbi_rounds.runtime.cancel import CancelToken
from sbi_rounds.runtime.concurrency import DRIVER

__all__ = ["campaign_inference"]


@flow(name="campaign", log_prints=True)
def campaign_inference(
    campaign: CampaignConfig,
    settings: dict[str, Any],
    preflights: list[Preflight] | None = None,
) -> dict[str, Any]:
    """Run (or resume) one online inference per observation, then summarize them.

    Args:
        campaign: The observations table, the campaign directory, the runs at once.
        settings: The settings every run shares (``RunConfig``'s, without ``xobs``,
            ``run_dir`` and ``run_id``, which the campaign sets per observation).
        preflights: What the command line's checks found for each run to do
            (``sbi_rounds.lifecycle.preflight.preflight``); their sessions then do not probe the
            simulator again. None (a deployment): each run's session checks.

    Returns:
        ``{"directory", "summary": the HTML page, "observations": [summary rows],
        "failed": {observation: error}}``.
    """
    logger = get_run_logger()
    configs = observation_configs(campaign, settings)
    todo = [c for c in configs if not is_finished(c)]
    logger.info(
        "campaign of %d observations in %s: %d finished, %d to run, at most %d at once",
        len(configs),
        campaign.directory,
        len(configs) - len(todo),
        len(todo),
        campaign.max_concurrent,
    )
    failed: dict[str, str] = {}
    if todo:
        first = shared_round_config(campaign, settings) if campaign.shared_first_round else None
        with shared_cluster([first, *todo] if first else todo):
            if first is not None and not is_finished(first):
                logger.info("the shared first round: %s", first.run_path)
                online_inference(first)  # a failure here stops the campaign: all need it
            errors = _run_all(todo, campaign.max_concurrent, preflights or [])
        for name, error in errors.items():
            logger.error("observation %s failed: %s: %s", name, type(error).__name__, error)
            # one line on the console (a failed chunk's summary); -v logs all of it above
            failed[name] = getattr(error, "summary", None) or f"{type(error).__name__}: {error}"
    rows = summarize(configs)
    print("\n" + format_summary(rows))
    page = write_summary_html(rows, campaign.directory)
    logger.info("campaign summary: %s", page)
    return {
        "directory": campaign.directory,
        "summary": str(page),
        "observations": rows,
        "failed": failed,
    }


def _run_all(
    configs: Sequence[RunConfig], limit: int, preflights: Sequence[Preflight]
) -> dict[str, BaseException]:
    """Run the subflows, at most ``limit`` at once; their errors by observation.

    A stop (a signal in this, the main thread) cancels every run, waits for them to commit
    and close, and is raised again.
    """
    errors: dict[str, BaseException] = {}
    slots = threading.Semaphore(limit)
    threads: list[threading.Thread] = []

    def one(config: RunConfig, context: contextvars.Context) -> None:
        checked = next((p for p in preflights if p.covers(config)), None)
        try:
            with DRIVER.held():  # released while it waits for simulations
                context.run(online_inference, config, preflight=checked)
        except BaseException as e:  # noqa: BLE001 - reported per observation
            errors[config.resolved_run_id] = e
        finally:
            slots.release()

    try:
        for config in configs:
            while not slots.acquire(timeout=0.5):  # wakes up for signals
                pass
            thread = threading.Thread(
                target=one,
                args=(config, contextvars.copy_context()),
                daemon=True,
                name=RUN_THREAD_PREFIX + config.resolved_run_id,
            )
            thread.start()
            threads.append(thread)
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
    except BaseException:
        CancelToken.cancel_all("the campaign was stopped")
        for thread in threads:
            thread.join(90)
        raise
    return errors
