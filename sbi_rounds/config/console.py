"""How a run says where it is: progress lines in logs (batch jobs, Prefect workers)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from sbi_rounds.strict import STRICT

__all__ = ["ConsoleConfig"]


class ConsoleConfig(BaseModel):
    """Progress reporting. In a terminal the command line shows a live display instead; in
    a log (a batch job's file, a Prefect worker, the Prefect UI) a line per stage says the
    round, the stage, counts, rate and time left, at most every ``progress_interval``
    seconds, also while nothing finishes (a long chunk, a long epoch)."""

    model_config = STRICT

    progress_interval: float = Field(
        30.0,
        gt=0,
        title="Seconds between progress lines",
        description="In logs (no terminal): at most one progress line per stage this often.",
    )
