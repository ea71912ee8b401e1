"""What every method declares (network role, default network and sampler, settings) and does."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel
from torch import Tensor, nn
from torch.distributions import Distribution

from sbi_rounds.store.schema import NetworkArchitecture, PriorMass, Role
from sbi_rounds.training.references import gaussian_baseline_losses
from sbi_rounds.training.state import LossFn

if TYPE_CHECKING:
    from sbi_rounds.methods.mcmc import PosteriorConfig

__all__ = [
    "CLASSIFIER_MODELS",
    "DENSITY_MODELS",
    "ROLE_MODELS",
    "Builder",
    "VECTOR_FIELD_MODELS",
    "DirectMethod",
    "Method",
    "Proposal",
    "Role",
    "TrainingData",
    "density_builder",
    "training_tensors",
]

#: sbi's network builder, called with ``theta (N, D)`` and ``x (N, K)`` (shapes and
#: z-scoring statistics): returns the network.
Builder = Callable[[Tensor, Tensor], nn.Module]

#: sbi's density estimators (posterior and likelihood networks).
DENSITY_MODELS = (
    "maf",
    "nsf",
    "mdn",
    "made",
    "zuko_maf",
    "zuko_nsf",
    "zuko_nice",
    "zuko_naf",
    "zuko_unaf",
    "zuko_gf",
    "zuko_bpf",
    "zuko_sospf",
)
#: sbi's classifiers (ratio networks).
CLASSIFIER_MODELS = ("mlp", "resnet", "linear")
#: sbi's vector-field networks (flow matching and score estimators, ``posterior_flow_nn`` and
#: ``posterior_score_nn``). ``mlp`` is also a classifier: the method's role tells which.
VECTOR_FIELD_MODELS = ("mlp", "ada_mlp", "transformer")
#: The network models each role can use.
ROLE_MODELS: dict[str, tuple[str, ...]] = {
    "posterior": DENSITY_MODELS,
    "likelihood": DENSITY_MODELS,
    "classifier": CLASSIFIER_MODELS,
    "vector_field": VECTOR_FIELD_MODELS,
}
_KINDS = {
    "posterior": "density estimator",
    "likelihood": "density estimator",
    "classifier": "classifier",
    "vector_field": "vector-field network",
}


@dataclass(frozen=True, kw_only=True)
class Proposal:
    """A distribution to draw a round's parameters from, and its stored description.

    Attributes:
        distribution: Has ``.sample((n,))``: a torch distribution or an sbi posterior.
        description: What the run file stores of it (JSON; the same for the same seed).
        acceptance: For a distribution sampled by rejection (a truncated prior), the share
            of draws it keeps and their cost (``sbi_rounds.methods.leakage``); None: not
            measured.
    """

    distribution: Any
    description: dict[str, Any]
    acceptance: PriorMass | None = None


@dataclass(frozen=True, kw_only=True)
class TrainingData:
    """Valid simulations of every round so far.

    Attributes:
        theta: Parameters ``(N, D)``.
        x: Simulations ``(N, K)``.
        round: The 1-based round each row came from ``(N,)``.
    """

    theta: Tensor
    x: Tensor
    round: Tensor

    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(theta, x, from_prior)``: the batch layout every method's loss reads."""
        return self.theta, self.x, (self.round == 1).float()


class Method(ABC):
    """A sequential inference method. Instances hold no per-run state.

    A method declares what is specific to it, so that no other module tests its name:

    Attributes:
        name: How the settings name it (``method: snpe``).
        role: What its network estimates (see :data:`Role`).
        default_network: The network model when ``network.model`` is not set.
        simple_network: A cheaper network trained first in round 1 when the user did not
            choose one: kept alone where the posterior is Gaussian-like, else the default
            is trained too and kept unless the simple one fits significantly better
            (``sbi_rounds.stages.network_choice``). None: the default network alone.
        scratch_from_simulations: With ``training.retrain_from_scratch: auto``, a round
            after the first trains fresh weights once it trains on at least this many
            simulations (every round's); None: it continues the previous round's network.
        default_sampler: The posterior sampler when ``posterior.sampler`` is ``auto``.
        samplers: The samplers it can use; any other ``posterior.sampler`` is an error
            (the settings are refused, not silently sampled another way).
        settings_field: The ``RunConfig`` field holding its typed settings (loss or
            proposal arguments), or None; :meth:`loss_fn` and :meth:`proposal` get them.
        calibrates_by_default: Whether ``diagnostics.calibration_simulations: auto`` runs
            the calibration test (some hundred posteriors and their densities: cheap for a
            normalizing flow, an ODE solve per density for a vector field).
        map_iterations: The MAP's gradient steps when ``diagnostics.map_iterations`` is
            ``auto``.
        trains_on_any_proposal: Whether its loss is correct for parameters drawn from any
            proposal, round 1's too (a likelihood or ratio), so that simulations drawn from
            elsewhere than the prior can start a run (``start_from.drawn_from``).
        measures_leakage: Whether its posterior is a network sampled by rejecting draws
            outside the prior, cheap to draw from, whose fraction inside the prior the
            posterior stage measures (``sbi_rounds.methods.leakage``).
        loss_note: What the report adds about its training losses (empty: nothing).
    """

    name: ClassVar[str]
    role: ClassVar[Role]
    default_network: ClassVar[str]
    simple_network: ClassVar[str | None] = None
    scratch_from_simulations: ClassVar[int | None] = None
    default_sampler: ClassVar[str]
    samplers: ClassVar[tuple[str, ...]]
    settings_field: ClassVar[str | None] = None
    calibrates_by_default: ClassVar[bool] = True
    map_iterations: ClassVar[int] = 200
    measures_leakage: ClassVar[bool] = False
    loss_note: ClassVar[str] = ""
    trains_on_any_proposal: ClassVar[bool] = False

    def check_network(self, model: str) -> None:
        """Raise ``ValueError`` when ``model`` cannot serve as this method's network."""
        allowed = ROLE_MODELS[self.role]
        if model not in allowed:
            kinds = sorted({_KINDS[r] for r, models in ROLE_MODELS.items() if model in models})
            raise ValueError(
                f"network.model={model!r} is a {' or '.join(kinds)}; {self.name} needs a "
                f"{_KINDS[self.role]}: one of {list(allowed)}"
            )

    def check_network_settings(self, network: BaseModel) -> None:  # noqa: B027 - a hook
        """Raise ``ValueError`` for a ``network`` setting changed from its default that this
        method's network does not use (none but for vector-field methods)."""

    def network_extras(self, settings: BaseModel | None) -> dict[str, Any]:
        """Architecture settings beyond ``network.*`` that the stored network description
        needs to rebuild the network (none but for vector-field methods)."""
        return {}

    @abstractmethod
    def network_builder(self, architecture: NetworkArchitecture, embedding: nn.Module) -> Builder:
        """sbi's builder of the network ``architecture`` describes (its ``role`` is this
        method's), with ``embedding`` as the embedding of x."""

    @abstractmethod
    def stall_reference(
        self,
        network: nn.Module,
        loss_fn: LossFn,
        train_rows: Sequence[Tensor],
        val_rows: Sequence[Tensor],
        seed: int,
    ) -> tuple[Tensor, str]:
        """Round 1's reference for the stall check (``sbi_rounds.stages.stall``): per-row
        validation losses ``(N_val,)`` of a model that learnt nothing useful, and its name.

        Args:
            network: The trained network.
            loss_fn: The round's loss.
            train_rows: The training rows ``(theta (N, D), x (N, K), ...)``.
            val_rows: The validation rows, in the same layout.
            seed: Seeds the losses' randomness (atoms, times).
        """

    def stall_dimensions(self, theta_dim: int, x_dim: int) -> int:
        """The dimensions the stall margin scales with (``stall.margin`` per dimension of
        the estimated density): 1 but for density networks."""
        return 1

    def sampler(self, sampling: PosteriorConfig) -> str:
        """The posterior sampler, with ``auto`` resolved to :attr:`default_sampler`.

        Raises:
            ValueError: ``posterior.sampler`` is not among :attr:`samplers`.
        """
        if sampling.sampler == "auto":
            return self.default_sampler
        if sampling.sampler not in self.samplers:
            raise ValueError(
                f"posterior.sampler={sampling.sampler!r} does not apply to {self.name}"
                f"{self.sampler_reason.format(method=self.name)}; use auto or "
                f"{' or '.join(self.samplers)}"
            )
        return sampling.sampler

    #: Why other samplers do not apply (after the method's name in the error; ``{method}``
    #: is replaced by the name).
    sampler_reason: ClassVar[str] = ""

    @abstractmethod
    def loss_fn(self, settings: BaseModel | None, prior: Distribution, round_: int) -> LossFn:
        """Per-sample loss for training in ``round_`` (1-based)."""

    @abstractmethod
    def posterior(
        self,
        sampling: PosteriorConfig,
        network: nn.Module,
        prior: Distribution,
        xobs: Tensor,
        settings: BaseModel | None = None,
    ) -> Any:
        """The sbi posterior of the trained ``network`` with ``xobs`` as default x
        (``settings``: the method's own, for methods whose sampler they configure)."""

    def proposal(
        self, settings: BaseModel | None, posterior: Any, prior: Distribution, round_: int
    ) -> Proposal:
        """The proposal of ``round_ >= 2``: by default the previous round's posterior at xobs."""
        return Proposal(
            distribution=posterior, description={"kind": "posterior", "round": round_ - 1}
        )


class DirectMethod(Method):
    """A method whose network is the posterior: sampled directly, no MCMC."""

    role: ClassVar[Role] = "posterior"
    default_sampler: ClassVar[str] = "direct"
    samplers: ClassVar[tuple[str, ...]] = ("direct",)
    measures_leakage: ClassVar[bool] = True
    sampler_reason: ClassVar[str] = ": its network is the posterior, sampled directly"

    def posterior(
        self,
        sampling: PosteriorConfig,
        network: nn.Module,
        prior: Distribution,
        xobs: Tensor,
        settings: BaseModel | None = None,
    ) -> Any:
        """A ``DirectPosterior`` at xobs (rejects samples outside the prior's support)."""
        from sbi.inference import DirectPosterior

        return DirectPosterior(network, prior).set_default_x(xobs)

    def network_builder(self, architecture: NetworkArchitecture, embedding: nn.Module) -> Builder:
        """sbi's ``posterior_nn``: a density of theta given x."""
        from sbi.neural_nets import posterior_nn

        return density_builder(posterior_nn, architecture, embedding)

    def stall_reference(
        self,
        network: nn.Module,
        loss_fn: LossFn,
        train_rows: Sequence[Tensor],
        val_rows: Sequence[Tensor],
        seed: int,
    ) -> tuple[Tensor, str]:
        """The best linear-Gaussian model of theta given x (``gaussian``)."""
        reference = gaussian_baseline_losses(train_rows[0], train_rows[1], val_rows[0], val_rows[1])
        return reference, "gaussian"

    def stall_dimensions(self, theta_dim: int, x_dim: int) -> int:
        """The posterior's: ``theta_dim``."""
        return theta_dim


def density_builder(
    factory: Callable[..., Builder], architecture: NetworkArchitecture, embedding: nn.Module
) -> Builder:
    """sbi's density-estimator builder ``factory`` (``posterior_nn``, ``likelihood_nn``)
    with ``architecture``'s arguments."""
    a = architecture
    return factory(
        model=a.model,
        hidden_features=a.hidden_features,
        num_transforms=a.num_transforms,
        num_bins=a.num_bins,
        num_components=a.num_components,
        embedding_net=embedding,
        z_score_theta=a.z_score_theta,
        z_score_x=a.z_score_x,
    )


def training_tensors(theta: list[Tensor], x: list[Tensor], rounds: list[int]) -> TrainingData:
    """Concatenate per-round valid data into one :class:`TrainingData`."""
    return TrainingData(
        theta=torch.cat(theta).float(),
        x=torch.cat(x).float(),
        round=torch.cat(
            [torch.full((len(t),), r, dtype=torch.long) for t, r in zip(theta, rounds, strict=True)]
        ),
    )
