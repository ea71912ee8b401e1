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
        description="A table with one observation per row: .csv, .npy or file.h5:dataset "
        "(relative paths: from the working directory).",
        examples=["data/xobs.csv"],
    )
    directory: str = Field(
        "campaign",
        min_length=1,
        title="Campaign directory",
        description="Observation i (from 0) runs in <directory>/obs-000i/run.h5; the summary "
        "is <directory>/summary.html.",
    )
    max_concurrent: int = Field(
        2,
        ge=1,
        le=256,
        title="Observations at once",
        description="Runs in progress at once, sharing one Dask cluster: one trains while "
        "the others simulate (their training takes turns, so results do not depend on it).",
    )
