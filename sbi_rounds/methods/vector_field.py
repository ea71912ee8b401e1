"""Truncated sequential vector-field posterior estimation: what TFMPE and TNPSE share.

sbi 0.27 trains flow-matching (FMPE) and score-based (NPSE) posterior estimators in one
round only (``append_simulations(..., proposal=...)`` refuses a proposal). Truncated
sequential estimation (Deistler et al. 2022, ``tsnpe``) needs no loss correction: every
round trains the estimator's plain loss on all rounds' data, drawn from the prior truncated
to the previous posterior's highest-density region. So the same truncation makes these
estimators sequential. Networks come from sbi's builders (``posterior_flow_nn``,
``posterior_score_nn``), the loss is the estimator's public ``loss``, and the posterior is
sbi's ``VectorFieldPosterior``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, model_validator
from torch import Tensor, nn
from torch.distributions import Distribution

from sbi_rounds.methods.base import Builder, Method, Proposal, Role
from sbi_rounds.methods.fitted_density import fitted_threshold
from sbi_rounds.methods.leakage import (
    MAX_PRIOR_MASS_DRAWS,
    PRIOR_MASS_DRAWS,
    measure_truncation,
)
from sbi_rounds.methods.mcmc import PosteriorConfig
from sbi_rounds.methods.tsnpe import TruncationConfig, density_threshold, truncated_prior
from sbi_rounds.store.schema import NetworkArchitecture
from sbi_rounds.strict import STRICT
from sbi_rounds.training.references import zero_field_losses
from sbi_rounds.training.state import LossFn

__all__ = [
    "ODE_TRUNCATION_DRAWS",
    "VectorFieldMethod",
    "VectorFieldSettings",
    "vector_field_loss",
    "vector_field_posterior",
]

#: Prior draws per batch when counting what a region bounded by the posterior's own
#: log-probability keeps (an ODE solve per draw; at most ten batches, while fewer than 10
#: fall inside): about a tenth of the cost of setting its threshold.
ODE_TRUNCATION_DRAWS = 1_000

#: ``(batch size) -> times (B,)``: how training draws diffusion times; None: the estimator's own.
TimeSampler = Any


class VectorFieldSettings(TruncationConfig):
    """Settings TFMPE and TNPSE share: network depth and time embedding, validation times,
    the ODE/SDE sampler, and the truncation of the proposals (``quantile`` and
    ``num_samples_to_estimate``, declared once in :class:`TruncationConfig`).

    The network's width, its model (mlp, ada_mlp, transformer) and the standardisation of
    theta and x are ``network.hidden_features``, ``network.model`` and ``network.z_score_*``.
    """

    model_config = STRICT

    num_layers: int = Field(
        5, ge=1, le=64, title="Layers", description="Hidden layers of the vector-field network."
    )
    time_embedding: Literal["sinusoidal", "random_fourier"] = Field(
        "sinusoidal",
        title="Time embedding",
        description="How the network sees the time: sinusoidal, or random Fourier features "
        "(sbi's builders document this one as 'fourier', but their networks take "
        "'random_fourier').",
    )
    time_embedding_dim: int = Field(
        32, ge=2, le=1024, title="Time embedding size", description="Size of the time embedding."
    )
    validation_times: int = Field(
        10,
        ge=1,
        le=1000,
        title="Validation times",
        description="Evenly spaced times at which every validation row's loss is evaluated "
        "(fixed times lower the validation loss's variance, as in sbi's train()).",
    )
    validation_times_nugget: float = Field(
        0.05,
        ge=0,
        lt=0.5,
        title="Validation time margin",
        description="The validation times keep this far from both ends of the time range, "
        "where the losses are noisiest.",
    )
    sde_steps: int = Field(
        500,
        ge=2,
        le=100_000,
        title="SDE steps",
        description="Euler-Maruyama steps per posterior sample with sample_with=sde.",
    )
    ode_atol: float = Field(
        1e-6,
        gt=0,
        le=1,
        title="ODE absolute tolerance",
        description="Of the adaptive ODE solver (zuko) that samples with sample_with=ode and "
        "evaluates log-probabilities (truncation with threshold_density=log_prob).",
    )
    ode_rtol: float = Field(
        1e-5, gt=0, le=1, title="ODE relative tolerance", description="See ode_atol."
    )
    threshold_density: Literal["log_prob", "kde"] = Field(
        "log_prob",
        title="Density of the truncated region",
        description="log_prob: the posterior's own log-probability (an ODE solve with the "
        "exact divergence per evaluated batch); kde: a Gaussian KDE fitted to the posterior "
        "samples (cheaper, a coarser region).",
    )

    #: The default of ``sample_with`` (each method declares the field with its own default).
    sample_with: Literal["ode", "sde"]

    @model_validator(mode="after")
    def _applicable(self) -> VectorFieldSettings:
        default = type(self).model_fields
        if self.sample_with == "ode" and self.sde_steps != default["sde_steps"].default:
            raise ValueError(
                f"sde_steps={self.sde_steps} applies only to sample_with=sde (the ODE solver "
                "is adaptive: set ode_atol and ode_rtol)"
            )
        if self.sample_with == "sde" and self.threshold_density == "kde":
            for name in ("ode_atol", "ode_rtol"):
                if getattr(self, name) != default[name].default:
                    raise ValueError(
                        f"{name} applies only where an ODE is solved (sample_with=ode or "
                        "threshold_density=log_prob)"
                    )
        return self


def vector_field_loss(
    validation_times: int, nugget: float, time_sampler: TimeSampler | None = None
) -> LossFn:
    """The estimator's own loss, as sbi's ``train()`` computes it (derived from its private
    ``_get_losses``); batches are ``(theta (B, D), x (B, K), ...)``.

    In training mode the times are drawn (by the estimator, or ``time_sampler``); in eval
    mode (validation, stall checks) every row is evaluated at ``validation_times`` fixed
    times ``estimator.solve_schedule(T, t_min + nugget, t_max - nugget)`` and the loss is
    the mean over them, per row ``(B,)``.
    """

    def loss(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
        theta, x = batch[0], batch[1]
        if model.training:
            times = None if time_sampler is None else time_sampler(theta.shape[0], theta.device)
            losses = model.loss(theta, x, times=times)
        else:
            b = theta.shape[0]
            times = model.solve_schedule(
                validation_times, t_min=model.t_min + nugget, t_max=model.t_max - nugget
            ).to(theta.device)
            losses = (
                model.loss(
                    theta.repeat(validation_times, 1),
                    x.repeat(validation_times, *([1] * (x.ndim - 1))),
                    times=times.repeat_interleave(b, dim=0),
                )
                .reshape(validation_times, b)
                .mean(0)
            )
        return losses

    return loss


def vector_field_posterior(
    network: nn.Module, prior: Distribution, xobs: Tensor, settings: VectorFieldSettings
) -> Any:
    """sbi's ``VectorFieldPosterior`` at xobs, sampling as ``settings`` say.

    ``sample`` and ``sample_batched`` take ``settings.sde_steps`` steps unless given
    ``steps``; the neural ODE (sampling with ``ode``, ``log_prob``) solves to
    ``settings.ode_atol`` / ``ode_rtol`` with the exact divergence.
    """
    from sbi.inference import VectorFieldPosterior

    class _Posterior(VectorFieldPosterior):
        def sample(
            self,
            sample_shape: Any = (),
            x: Tensor | None = None,
            show_progress_bars: bool = True,
            **kwargs: Any,
        ) -> Tensor:
            kwargs.setdefault("steps", settings.sde_steps)
            return super().sample(
                sample_shape, x=x, show_progress_bars=show_progress_bars, **kwargs
            )

        def sample_batched(self, sample_shape: Any, x: Tensor, **kwargs: Any) -> Tensor:
            kwargs.setdefault("steps", settings.sde_steps)
            return super().sample_batched(sample_shape, x, **kwargs)

    posterior = _Posterior(
        network,
        prior,
        sample_with=settings.sample_with,
        neural_ode_kwargs={"atol": settings.ode_atol, "rtol": settings.ode_rtol, "exact": True},
    )
    return posterior.set_default_x(xobs)


class VectorFieldMethod(Method):
    """A truncated sequential vector-field method: the estimator's loss in every round,
    proposals from the prior truncated to the previous posterior's HPD region."""

    role: ClassVar[Role] = "vector_field"
    default_network: ClassVar[str] = "mlp"
    #: ``direct``: the posterior's own sampler, an ODE or SDE solve (``sample_with``).
    default_sampler: ClassVar[str] = "direct"
    samplers: ClassVar[tuple[str, ...]] = ("direct",)
    sampler_reason: ClassVar[str] = (
        ": its posterior is sampled by solving the estimator's ODE or SDE ({method}.sample_with)"
    )
    calibrates_by_default: ClassVar[bool] = False
    #: Each step differentiates through an ODE solve (~0.2 s for 10 points in 2-D, 200
    #: steps ~45 s a round); 20 steps reached the exact log-density 200 steps did.
    map_iterations: ClassVar[int] = 20
    #: ``flow`` (flow matching) or ``score`` (score matching).
    estimator: ClassVar[str]
    #: ``network`` settings a vector-field network does not have (its depth:
    #: ``<method>.num_layers``).
    NOT_VECTOR_FIELD: ClassVar[tuple[str, ...]] = ("num_transforms", "num_bins", "num_components")

    def network_extras(self, settings: VectorFieldSettings) -> dict[str, Any]:
        """``estimator``, ``num_layers`` and the time embedding (subclasses add theirs)."""
        return {
            "estimator": self.estimator,
            "num_layers": settings.num_layers,
            "time_embedding": settings.time_embedding,
            "time_embedding_dim": settings.time_embedding_dim,
        }

    def check_network_settings(self, network: BaseModel) -> None:
        """The flow-only settings (:attr:`NOT_VECTOR_FIELD`) left at their defaults."""
        defaults = type(network).model_fields
        for name in self.NOT_VECTOR_FIELD:
            if getattr(network, name) != defaults[name].default:
                raise ValueError(
                    f"network.{name}={getattr(network, name)} does not apply to {self.name}'s "
                    f"vector-field network (its depth is {self.settings_field}.num_layers); "
                    "remove it"
                )

    def network_builder(self, architecture: NetworkArchitecture, embedding: nn.Module) -> Builder:
        """sbi's vector-field builder (:meth:`field_builder`) with the arguments every
        vector-field network takes."""
        a = architecture
        return self.field_builder(
            architecture,
            model=a.model,
            hidden_features=a.hidden_features,
            num_layers=a.num_layers,
            embedding_net=embedding,
            time_emb_type=a.time_embedding,
            t_embedding_dim=a.time_embedding_dim,
            z_score_theta=a.z_score_theta,
            z_score_x=a.z_score_x,
        )

    @abstractmethod
    def field_builder(self, architecture: NetworkArchitecture, **common: Any) -> Builder:
        """sbi's ``posterior_flow_nn`` or ``posterior_score_nn`` with the ``common``
        arguments and the estimator's own from ``architecture``."""

    def stall_reference(
        self,
        network: nn.Module,
        loss_fn: LossFn,
        train_rows: Sequence[Tensor],
        val_rows: Sequence[Tensor],
        seed: int,
    ) -> tuple[Tensor, str]:
        """The trained estimator with its network replaced by zeros (``zero_field``): the
        Gaussian field its standardisation implies, blind to x."""
        return zero_field_losses(network, loss_fn, val_rows, seed), "zero_field"

    def time_sampler(self, settings: VectorFieldSettings) -> TimeSampler | None:
        """How training draws times; None: the estimator's own schedule."""
        return None

    def loss_fn(self, settings: VectorFieldSettings, prior: Distribution, round_: int) -> LossFn:
        """The estimator's loss in every round (truncated proposals need no correction)."""
        return vector_field_loss(
            settings.validation_times, settings.validation_times_nugget, self.time_sampler(settings)
        )

    def posterior(
        self,
        sampling: PosteriorConfig,
        network: nn.Module,
        prior: Distribution,
        xobs: Tensor,
        settings: BaseModel | None = None,
    ) -> Any:
        """sbi's ``VectorFieldPosterior`` at xobs (see :func:`vector_field_posterior`)."""
        self.sampler(sampling)
        assert isinstance(settings, VectorFieldSettings), "vector-field methods need settings"
        return vector_field_posterior(network, prior, xobs, settings)

    def proposal(
        self, settings: VectorFieldSettings, posterior: Any, prior: Distribution, round_: int
    ) -> Proposal:
        """The prior truncated to the previous posterior's ``1 - quantile`` HPD region,
        measured by its log-probability or by a KDE of its samples (``threshold_density``),
        with the share of prior draws it keeps (``kept``; counted on fewer draws with the
        log-probability, an ODE solve each: :data:`ODE_TRUNCATION_DRAWS`)."""
        s = settings
        if s.threshold_density == "log_prob":
            threshold = density_threshold(posterior, s.quantile, s.num_samples_to_estimate)
            density = posterior
            draws = (ODE_TRUNCATION_DRAWS, 10 * ODE_TRUNCATION_DRAWS)
        else:
            samples = posterior.sample((s.num_samples_to_estimate,), show_progress_bars=False)
            density, threshold = fitted_threshold(samples, s.quantile)
            draws = (PRIOR_MASS_DRAWS, MAX_PRIOR_MASS_DRAWS)
        kept = measure_truncation(prior, density, threshold, *draws)
        description = {
            "kind": "truncated_prior",
            "round": round_ - 1,
            "log_prob_threshold": threshold,
            "quantile": s.quantile,
            "density": s.threshold_density,
            "kept": kept.fraction,
        }
        return Proposal(
            distribution=truncated_prior(prior, density, threshold),
            description=description,
            acceptance=kept,
        )
