"""How a posterior is sampled: its settings, MCMC chain starts, and potential-based methods."""

from __future__ import annotations

from abc import abstractmethod
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn
from torch.distributions import Distribution

from sbi_rounds.methods.base import Method
from sbi_rounds.strict import STRICT

__all__ = [
    "AUTO_DIRECT_SAMPLES",
    "AUTO_MIN_SAMPLES",
    "PosteriorConfig",
    "PotentialMethod",
    "ResampledInits",
    "potential_posterior",
]


#: ``posterior.num_samples: auto`` where the posterior is sampled directly.
AUTO_DIRECT_SAMPLES = 1000
#: ``posterior.num_samples: auto``: the fewest a round stores (its summary's mean and sd).
AUTO_MIN_SAMPLES = 200


class PosteriorConfig(BaseModel):
    """How the posterior at xobs is sampled (stored per round, proposal of the next)."""

    model_config = STRICT

    num_samples: Annotated[int, Field(ge=10, le=10_000_000)] | Literal["auto"] = Field(
        "auto",
        title="Posterior samples per round",
        description="Posterior samples at xobs stored per round (the first parameters of the "
        "next round); auto: 1000 where the posterior is sampled directly (snpe, tsnpe, "
        "tfmpe, tnpse), else (MCMC) the next round's simulations and the predictive check's, "
        f"at least {AUTO_MIN_SAMPLES}: an MCMC sample costs what a network evaluation per "
        "chain step does, so draw what is used.",
    )
    sampler: Literal["auto", "direct", "mcmc", "rejection", "importance"] = Field(
        "auto",
        title="Sampler",
        description="auto: the method's own (direct for SNPE/TSNPE, mcmc for SNLE/SNRE).",
    )
    max_sampling_seconds: float | None = Field(
        1800.0,
        gt=0,
        title="Max seconds a rejection sampling may take",
        description="SNPE and TSNPE draw the posterior by rejecting the network's samples "
        "that fall outside the prior: when most of its mass leaks out, that is slow. A "
        "sampling predicted (from the measured fraction inside the prior) or seen to take "
        "longer stops the run with the remedies, keeping every finished stage; none: no limit.",
    )
    mcmc_method: Literal["slice_np_vectorized", "slice_np"] = Field(
        "slice_np_vectorized",
        title="MCMC method",
        description="slice_np_vectorized advances all chains together in one vectorized step.",
    )
    num_chains: int = Field(20, ge=1, le=10_000, title="MCMC chains", description="MCMC chains.")
    thin: int = Field(1, ge=1, title="Thinning", description="Keep every thin-th MCMC sample.")
    warmup_steps: int = Field(
        50, ge=0, title="Warm-up steps", description="MCMC steps discarded before sampling."
    )
    init_strategy: Literal["resample", "sir", "proposal"] = Field(
        "resample", title="Chain initialisation", description="How MCMC chains start."
    )
    batches: int = Field(
        1,
        ge=1,
        le=1000,
        title="Commit samples in this many batches",
        description="Samples are committed in this many batches (MCMC, rejection, importance), "
        "so an interrupted sampling keeps what it drew. Every MCMC batch starts its chains "
        "and warms them up again (2 batches took 1.7x the time of 1 for SNLE's 200 samples a "
        "round), so more than 1 pays only where one sampling takes minutes.",
    )
    mcmc_workers: int = Field(
        1,
        ge=1,
        le=1024,
        title="MCMC processes",
        description="1: all chains advance together, vectorized, in the run's process (its "
        "torch threads use the cores); more: chains are split across this many processes.",
    )


class ResampledInits:
    """Initial points of MCMC chains: prior draws resampled by their weights, drawn once.

    sbi's ``sir`` and ``resample`` initialisations evaluate ``num_candidates`` prior draws
    for *every* chain (100 chains: a million network evaluations per sampling call). This
    proposal evaluates one batch of ``num_candidates`` draws on the first call and then
    resamples every chain's start from it (with replacement), which is the same
    importance-resampling scheme at the cost of one chain's. ``sir`` weighs a draw by the
    potential minus the prior's log density (the likelihood or ratio: an approximate
    posterior draw); ``resample`` by the potential alone. sbi's ``proposal`` initialisation
    draws from it.

    Args:
        prior: The prior, the candidates' distribution.
        potential_fn: sbi's potential at ``xobs``: ``theta (N, D) -> (N,)``.
        strategy: ``sir`` or ``resample``.
        num_candidates: Prior draws evaluated once.
    """

    def __init__(
        self, prior: Distribution, potential_fn: Any, strategy: str, num_candidates: int = 10_000
    ) -> None:
        self.prior, self.potential_fn = prior, potential_fn
        self.strategy, self.num_candidates = strategy, num_candidates
        self._candidates: Tensor | None = None
        self._probs: Tensor | None = None

    def _weigh(self) -> None:
        with torch.no_grad():
            candidates = self.prior.sample((self.num_candidates,)).reshape(self.num_candidates, -1)
            log_w = self.potential_fn(candidates).reshape(-1).double()
            if self.strategy == "sir":
                log_w = log_w - self.prior.log_prob(candidates).reshape(-1).double()
            log_w = torch.nan_to_num(log_w, nan=-torch.inf)
            if not bool(torch.isfinite(log_w).any()):
                log_w = torch.zeros_like(log_w)  # nothing to go by: start from prior draws
            self._candidates = candidates
            self._probs = torch.softmax(log_w, dim=0)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        """``sample_shape`` resampled candidates: ``(*sample_shape, D)``."""
        if self._candidates is None:
            self._weigh()
        assert self._candidates is not None and self._probs is not None
        n = int(torch.Size(sample_shape).numel())
        idx = torch.multinomial(self._probs, n, replacement=True)
        return self._candidates[idx].reshape(*sample_shape, -1)

    def to(self, device: Any) -> ResampledInits:
        """Stays on the CPU, where the candidates were drawn (for sbi's ``.to``)."""
        return self


def potential_posterior(
    sampling: PosteriorConfig,
    sampler: str,
    potential_fn: Any,
    theta_transform: Any,
    prior: Distribution,
    xobs: Tensor,
) -> Any:
    """The sbi posterior sampling ``potential_fn`` with ``sampler`` (mcmc, rejection, importance).

    MCMC runs ``num_chains`` chains; ``slice_np_vectorized`` advances them together in one
    vectorized step (the network evaluates all chains in one batch on the torch threads),
    and ``mcmc_workers > 1`` splits the chains across that many processes. The chains start
    from :class:`ResampledInits` (``sir``, ``resample``) or from prior draws (``proposal``).

    Raises:
        ValueError: ``sampler`` is none of the three.
    """
    from sbi.inference import ImportanceSamplingPosterior, MCMCPosterior, RejectionPosterior

    p = sampling
    if sampler == "mcmc":
        inits: Any = prior
        if p.init_strategy in ("sir", "resample"):
            inits = ResampledInits(prior, potential_fn, p.init_strategy)
        post = MCMCPosterior(
            potential_fn,
            proposal=inits,
            theta_transform=theta_transform,
            method=p.mcmc_method,
            thin=p.thin,
            warmup_steps=p.warmup_steps,
            num_chains=p.num_chains,
            init_strategy="proposal",
            num_workers=min(p.mcmc_workers, p.num_chains),
        )
    elif sampler == "rejection":
        post = RejectionPosterior(potential_fn, proposal=prior, theta_transform=theta_transform)
    elif sampler == "importance":
        post = ImportanceSamplingPosterior(
            potential_fn, proposal=prior, theta_transform=theta_transform, method="sir"
        )
    else:
        raise ValueError(f"sampler {sampler!r}: use mcmc, rejection or importance")
    return post.set_default_x(xobs)


class PotentialMethod(Method):
    """A method whose network gives a potential (likelihood or ratio) sampled with MCMC."""

    default_sampler: ClassVar[str] = "mcmc"
    samplers: ClassVar[tuple[str, ...]] = ("mcmc", "rejection", "importance")
    sampler_reason: ClassVar[str] = (
        ": its network is a likelihood or ratio, sampled through its potential"
    )

    @abstractmethod
    def potential(self, network: nn.Module, prior: Distribution, xobs: Tensor) -> tuple[Any, Any]:
        """``(potential_fn, theta_transform)`` of the trained ``network`` at ``xobs``."""

    def posterior(
        self,
        sampling: PosteriorConfig,
        network: nn.Module,
        prior: Distribution,
        xobs: Tensor,
        settings: BaseModel | None = None,
    ) -> Any:
        """Prior times the learned potential at xobs, sampled as ``sampling`` says (MCMC)."""
        sampler = self.sampler(sampling)
        potential, transform = self.potential(network, prior, xobs)
        return potential_posterior(sampling, sampler, potential, transform, prior, xobs)
