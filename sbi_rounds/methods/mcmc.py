"""Posteriors from a potential (likelihood or ratio): MCMC, rejection or importance sampling."""

from __future__ import annotations

from typing import Any

from sbi.inference import ImportanceSamplingPosterior, MCMCPosterior, RejectionPosterior
from torch import Tensor
from torch.distributions import Distribution

from sbi_rounds.config import RunConfig

__all__ = ["potential_posterior"]


def potential_posterior(
    config: RunConfig, potential_fn: Any, theta_transform: Any, prior: Distribution, xobs: Tensor
) -> Any:
    """The sbi posterior sampling ``potential_fn`` as ``config.posterior`` says.

    MCMC runs ``num_chains`` chains; ``slice_np_vectorized`` advances them together in one
    vectorized step (the network evaluates all chains in one batch on the torch threads),
    and ``mcmc_workers > 1`` splits the chains across that many processes.
    """
    p = config.posterior
    sampler = config.posterior_sampler
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
        raise ValueError(
            f"posterior.sampler={sampler!r} does not apply to {config.method}; use mcmc, "
            "rejection or importance"
        )
    return post.set_default_x(xobs)
