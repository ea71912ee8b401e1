"""TNPSE: truncated sequential score-based posterior estimation (sbi's NPSE, in rounds)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from sbi_rounds.methods.base import Builder
from sbi_rounds.methods.vector_field import VectorFieldMethod, VectorFieldSettings
from sbi_rounds.store.schema import NetworkArchitecture

__all__ = ["TNPSE", "ScoreMatchingConfig"]


class ScoreMatchingConfig(VectorFieldSettings):
    """TNPSE: denoising score matching (Song et al. 2021; NPSE, Geffner et al. 2023) with
    proposals truncated to the previous posterior's highest-density region."""

    sample_with: Literal["ode", "sde"] = Field(
        "sde",
        title="Sampler",
        description="sde: the reverse diffusion with sde_steps Euler-Maruyama steps (sbi's "
        "NPSE default); ode: the probability-flow ODE (adaptive).",
    )
    sde_type: Literal["ve", "vp", "subvp"] = Field(
        "ve",
        title="SDE",
        description="ve: variance exploding (sbi's default); vp: variance preserving; "
        "subvp: sub-variance preserving.",
    )
    train_schedule: Literal["uniform", "lognormal"] = Field(
        "uniform",
        title="Training times",
        description="sde_type=ve only: uniform times (sbi's default), or lognormal noise "
        "levels (Karras et al. 2022).",
    )

    @model_validator(mode="after")
    def _ve_only(self) -> ScoreMatchingConfig:
        if self.sde_type != "ve" and self.train_schedule != "uniform":
            raise ValueError(
                f"train_schedule={self.train_schedule!r} applies only to sde_type='ve' "
                f"(got sde_type={self.sde_type!r})"
            )
        return self


class TNPSE(VectorFieldMethod):
    """Truncated sequential NPSE: score matching loss on all rounds, truncated-prior proposals."""

    name: ClassVar[str] = "tnpse"
    settings_field: ClassVar[str | None] = "tnpse"
    estimator: ClassVar[str] = "score"

    def network_extras(self, settings: ScoreMatchingConfig) -> dict[str, Any]:  # type: ignore[override]
        """The shared settings, ``sde_type`` and (VE) ``train_schedule``."""
        extras = {**super().network_extras(settings), "sde_type": settings.sde_type}
        if settings.sde_type == "ve":
            extras["train_schedule"] = settings.train_schedule
        return extras

    def field_builder(self, architecture: NetworkArchitecture, **common: Any) -> Builder:
        """sbi's ``posterior_score_nn`` for the architecture's SDE (and, VE, its schedule)."""
        from sbi.neural_nets import posterior_score_nn

        a = architecture
        schedule = {} if a.train_schedule is None else {"train_schedule": a.train_schedule}
        return posterior_score_nn(sde_type=a.sde_type, **common, **schedule)
