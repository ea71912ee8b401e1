"""TFMPE: truncated sequential flow-matching posterior estimation (sbi's FMPE, in rounds)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from sbi_rounds.methods.base import Builder
from sbi_rounds.methods.vector_field import TimeSampler, VectorFieldMethod, VectorFieldSettings
from sbi_rounds.store.schema import NetworkArchitecture

__all__ = ["TFMPE", "FlowMatchingConfig", "logit_normal_times", "power_times"]


class FlowMatchingConfig(VectorFieldSettings):
    """TFMPE: flow matching (Lipman et al. 2023; FMPE, Wildberger et al. 2023) with proposals
    truncated to the previous posterior's highest-density region."""

    sample_with: Literal["ode", "sde"] = Field(
        "ode",
        title="Sampler",
        description="ode: solve the learned flow's ODE (adaptive, deterministic given its "
        "start); sde: the equivalent SDE with sde_steps Euler-Maruyama steps.",
    )
    time_sampling: Literal["uniform", "logit_normal", "power"] = Field(
        "uniform",
        title="Training times",
        description="uniform on [0, 1] (sbi's FMPE); logit_normal: sigmoid of a standard "
        "normal, more weight on intermediate times (Esser et al. 2024); power: u ** "
        "time_power for uniform u, more weight near t = 0, the data end of sbi's path, where "
        "the posterior's fine structure is learned.",
    )
    time_power: float = Field(
        3.0,
        ge=1,
        le=100,
        title="Time power",
        description="The exponent of time_sampling=power (1 is uniform).",
    )
    gaussian_baseline: bool = Field(
        False,
        title="Gaussian baseline velocity",
        description="The network learns the residual of the velocity of a Gaussian fitted to "
        "theta (sbi's gaussian_baseline).",
    )

    @model_validator(mode="after")
    def _time_power_applies(self) -> FlowMatchingConfig:
        default = type(self).model_fields["time_power"].default
        if self.time_sampling != "power" and self.time_power != default:
            raise ValueError(
                f"time_power={self.time_power} applies only to time_sampling=power "
                f"(time_sampling is {self.time_sampling})"
            )
        return self


def logit_normal_times(batch_size: int, device: torch.device) -> torch.Tensor:
    """Times ``sigmoid(z)``, ``z ~ N(0, 1)``: ``(B,)`` in (0, 1)."""
    return torch.sigmoid(torch.randn(batch_size, device=device))


def power_times(power: float) -> TimeSampler:
    """Times ``u ** power``, ``u ~ U(0, 1)``: ``(B,)`` in [0, 1), density
    ``t ** (1 / power - 1) / power``, so more of them near ``t = 0`` (sbi's data end)."""

    def sample(batch_size: int, device: torch.device) -> torch.Tensor:
        return torch.rand(batch_size, device=device) ** power

    return sample


class TFMPE(VectorFieldMethod):
    """Truncated sequential FMPE: flow matching loss on all rounds, truncated-prior proposals."""

    name: ClassVar[str] = "tfmpe"
    settings_field: ClassVar[str | None] = "tfmpe"
    estimator: ClassVar[str] = "flow"

    def network_extras(self, settings: FlowMatchingConfig) -> dict[str, Any]:  # type: ignore[override]
        """The shared settings and ``gaussian_baseline``."""
        return {**super().network_extras(settings), "gaussian_baseline": settings.gaussian_baseline}

    def field_builder(self, architecture: NetworkArchitecture, **common: Any) -> Builder:
        """sbi's ``posterior_flow_nn``, with or without its Gaussian baseline."""
        from sbi.neural_nets import posterior_flow_nn

        return posterior_flow_nn(gaussian_baseline=architecture.gaussian_baseline, **common)

    def time_sampler(self, settings: FlowMatchingConfig) -> TimeSampler | None:  # type: ignore[override]
        """None (sbi's uniform times), :func:`logit_normal_times` or :func:`power_times`."""
        if settings.time_sampling == "logit_normal":
            return logit_normal_times
        if settings.time_sampling == "power":
            return power_times(settings.time_power)
        return None
