"""``CampaignConfig``: one run per observation of a table, with shared settings."""

from __future__ import annotations

from pydantic import BaseModel, Field

from sbi_rounds.strict import STRICT

__all__ = ["CampaignConfig"]


class CampaignConfig(BaseModel):
    """A campaign: the observations, where their runs go, and how many run at once.

    Example:
        ``CampaignConfig(observations="data/xobs.csv", directory="campaigns/c1")``
    """

    model_config = STRICT

    observations: str = Field(
        ...,
        min_length=1,
        title="Observations",
        description="A table with one observation per row: .csv (a header row of column "
        "names allowed: they name x's entries), .npy or file.h5:dataset (relative paths: "
        "from the working directory).",
        examples=["data/xobs.csv"],
    )
    directory: str = Field(
        "campaign",
        min_length=1,
        title="Campaign directory",
        description="Observation i (from 0) runs in <directory>/obs-000i/run.h5 (or the "
        "id column's name); the summary is <directory>/summary.html.",
    )
    id_column: str | None = Field(
        None,
        min_length=1,
        title="Observation id column",
        description="The .csv header's column of observation ids: each names its "
        "observation's directory instead of obs-000i (letters, digits, '.', '_', '-').",
        examples=["galaxy"],
    )
    shared_first_round: bool = Field(
        False,
        title="Shared first round",
        description="Simulate and train round 1 (prior draws) once, in "
        "<directory>/shared-round, and start every observation's run from it (start_from, its "
        "training adopted) instead of simulating it per observation; the results are a "
        "separate run's. Off: each observation is a separate run.",
    )
    max_concurrent: int = Field(
        2,
        ge=1,
        le=256,
        title="Observations at once",
        description="Runs in progress at once, sharing one Dask cluster: one trains while "
        "the others simulate (their training takes turns, so results do not depend on it).",
    )
