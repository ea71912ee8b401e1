"""Prefect artifacts of a run: simulation progress, the round table and the posterior summary.

Their markdown is rendered in ``flows.markdown``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flows.markdown import (
    MAX_EMBEDDED_IMAGE_BYTES,
    checks_markdown,
    png_data_uri,
    posterior_markdown,
    round_table_artifact_rows,
)
from sbi_rounds.report.table import RoundRow

__all__ = [
    "MAX_EMBEDDED_IMAGE_BYTES",
    "SimulationProgress",
    "artifact_key",
    "checks_markdown",
    "png_data_uri",
    "posterior_markdown",
    "publish_dashboard_link",
    "publish_posterior",
    "publish_report_link",
    "publish_round_table",
    "round_table_artifact_rows",
]


def artifact_key(run_id: str, what: str) -> str:
    """A Prefect artifact key for ``what`` of run ``run_id``: lowercase letters, digits, dashes.

    Example:
        ``artifact_key("snpe-1a2b3c_X", "rounds") == "snpe-1a2b3c-x-rounds"``
    """
    slug = re.sub(r"[^a-z0-9]+", "-", f"{run_id}-{what}".lower()).strip("-")
    return slug or "sbi-rounds"


def _safely(
    logger: logging.Logger | logging.LoggerAdapter[Any], what: str, call: Callable[[], Any]
) -> Any:
    """Call ``call``; an API error is logged as a warning instead of failing the run.

    Artifacts are a view of the run file, which stays the source of truth: losing one to
    a server hiccup must not stop hours of simulation.
    """
    try:
        return call()
    except Exception as e:  # noqa: BLE001 - reported, and the run file has the data
        logger.warning("could not publish the %s artifact: %s: %s", what, type(e).__name__, e)
        return None


def publish_round_table(
    logger: logging.Logger | logging.LoggerAdapter[Any],
    run_id: str,
    rows: Sequence[RoundRow],
) -> UUID | None:
    """Create (a new version of) the run's round-table artifact, key ``<run>-rounds``."""
    table = round_table_artifact_rows(rows)
    return _safely(
        logger,
        "round table",
        lambda: create_table_artifact(
            table=table,
            key=artifact_key(run_id, "rounds"),
            description=f"Run {run_id}: per-round simulations, training and seconds per stage.",
        ),
    )


def publish_posterior(
    logger: logging.Logger | logging.LoggerAdapter[Any], run_id: str, round_: int, **fields: Any
) -> UUID | None:
    """Create the round's posterior markdown artifact, key ``<run>-posterior``.

    Args:
        logger: Where a failure to publish is reported.
        run_id: The run's id.
        round_: The round (1-based).
        **fields: The other arguments of :func:`posterior_markdown`.
    """
    markdown = posterior_markdown(run_id=run_id, round_=round_, **fields)
    return _safely(
        logger,
        "posterior",
        lambda: create_markdown_artifact(
            markdown=markdown,
            key=artifact_key(run_id, "posterior"),
            description=f"Run {run_id}: posterior summary and pairplot after round {round_}.",
        ),
    )


def publish_report_link(
    logger: logging.Logger | logging.LoggerAdapter[Any], run_id: str, path: str | Path
) -> UUID | None:
    """Create a link artifact to the run's HTML report, key ``<run>-report`` (a ``file:``
    URI: it opens where the run directory is reachable; the posterior artifact holds the
    summary)."""
    uri = Path(path).resolve().as_uri()
    return _safely(
        logger,
        "report link",
        lambda: create_link_artifact(
            link=uri,
            link_text=f"HTML report of run {run_id}",
            key=artifact_key(run_id, "report"),
            description=f"Run {run_id}: the self-contained HTML report ({path}).",
        ),
    )


def publish_dashboard_link(
    logger: logging.Logger | logging.LoggerAdapter[Any], run_id: str, url: str
) -> UUID | None:
    """Create a link artifact to the Dask dashboard, key ``<run>-dask-dashboard``."""
    return _safely(
        logger,
        "Dask dashboard link",
        lambda: create_link_artifact(
            link=url,
            link_text="Dask dashboard",
            key=artifact_key(run_id, "dask-dashboard"),
            description=f"Run {run_id}: the Dask dashboard while the run's cluster is up.",
        ),
    )


class SimulationProgress:
    """A Prefect progress artifact of one round's simulations, updated as chunks commit.

    Use it as ``simulate_round``'s ``progress`` callback: ``progress(done, total, rate)``.
    Updates are sent at most every ``min_interval`` seconds, and always at completion.

    Args:
        logger: Where a failure to publish is reported.
        run_id: The run's id (the artifact key is ``<run>-simulation-progress``).
        round_: The round (1-based).
        rounds: The number of rounds of the run.
        done: Simulations already committed (a resumed round starts above 0).
        total: Simulations of the round.
        min_interval: Seconds between updates.
    """

    def __init__(
        self,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        run_id: str,
        round_: int,
        rounds: int,
        *,
        done: int,
        total: int,
        min_interval: float = 1.0,
    ) -> None:
        self.logger, self.round, self.rounds = logger, round_, rounds
        self.min_interval = min_interval
        self._last = -math.inf
        self.artifact_id: UUID | None = _safely(
            logger,
            "simulation progress",
            lambda: create_progress_artifact(
                progress=self._percent(done, total),
                key=artifact_key(run_id, "simulation-progress"),
                description=self._describe(done, total, None),
            ),
        )

    @staticmethod
    def _percent(done: int, total: int) -> float:
        return 100.0 * done / total if total > 0 else 100.0

    def _describe(self, done: int, total: int, rate: float | None) -> str:
        speed = "" if rate is None else f", {rate:.0f} simulations/s"
        return f"Round {self.round} of {self.rounds}: {done} of {total} simulations{speed}"

    def __call__(self, done: int, total: int, rate: float) -> None:
        """Report ``done`` of ``total`` simulations at ``rate`` simulations per second."""
        now = time.monotonic()
        if self.artifact_id is None or (done < total and now - self._last < self.min_interval):
            return
        self._last = now
        artifact_id = self.artifact_id
        _safely(
            self.logger,
            "simulation progress",
            lambda: update_progress_artifact(
                artifact_id=artifact_id,
                progress=self._percent(done, total),
                description=self._describe(done, total, rate),
            ),
        )
