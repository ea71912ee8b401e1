"""How a posterior is sampled: its settings, MCMC chain starts, and potential-based methods."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field
from torch import Tensor, nn
from torch.distributions import Distribution

from sbi_rounds.methods.base import Method
from sbi_rounds.strict import STRICT

__all__ = ["PosteriorConfig", "PotentialMethod", "potential_posterior"]


class PosteriorConfig(BaseModel):
    """How the posterior at xobs is sampled (stored per round, proposal of the next)."""

    model_config = STRICT

    num_samples: int = Field(
        1000,
        ge=10,
        le=10_000_000,
        title="Posterior samples per round",
        description="Posterior samples at xobs stored per round (the first parameters of the "
        "next round).",
    )
    sampler: Literal["auto", "direct", "mcmc", "rejection", "importance"] = Field(
        "auto",
        title="Sampler",
        description="auto: the method's own (direct for SNPE/TSNPE, mcmc for SNLE/SNRE).",
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
        2,
        ge=1,
        le=1000,
        title="Commit samples in this many batches",
        description="Samples are committed in this many batches (MCMC, rejection, importance), "
        "so an interrupted sampling keeps what it drew.",
    )
    mcmc_workers: int = Field(
        1,
        ge=1,
        le=1024,
        title="MCMC processes",
        description="1: all chains advance together, vectorized, in the run's process (its "
        "torch threads use the cores); more: chains are split across this many processes.",
    )


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
    and ``mcmc_workers > 1`` splits the chains across that many processes.

    Raises:
        ValueError: ``sampler`` is none of the three.
    """
    from sbi.inference import ImportanceSamplingPosterior, MCMCPosterior, RejectionPosterior

    p = sampling
    if sampler == "mcmc":
        post = MCMCPosterior(
            potential_fn,
            proposal=prior,
            theta_transform=theta_transform,
            method=p.mcmc_method,
            thin=p.thin,
            warmup_steps=p.warmup_steps,
            num_chains=p.num_chains,
            init_strategy=p.init_strategy,
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

    default_network: ClassVar[str] = "maf"
    default_sampler: ClassVar[str] = "mcmc"

    @abstractmethod
    def potential(self, network: nn.Module, prior: Distribution, xobs: Tensor) -> tuple[Any, Any]:
        """``(potential_fn, theta_transform)`` of the trained ``network`` at ``xobs``."""

    def posterior(
        self, sampling: PosteriorConfig, network: nn.Module, prior: Distribution, xobs: Tensor
    ) -> Any:
        """Prior times the learned potential at xobs, sampled as ``sampling`` says (MCMC)."""
        sampler = self.sampler(sampling)
        if sampler == "direct":
            raise ValueError(
                f"posterior.sampler={sampler!r} does not apply to {self.name}; use mcmc, "
                "rejection or importance"
            )
        potential, transform = self.potential(network, prior, xobs)
        return potential_posterior(sampling, sampler, potential, transform, prior, xobs)
