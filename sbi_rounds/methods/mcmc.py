"""Posteriors from a potential (likelihood or ratio): MCMC, rejection or importance sampling."""

from __future__ import annotations

import os
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

    MCMC runs ``num_chains`` chains (``slice_np_vectorized`` advances them together),
    split across the machine's cores (``num_workers``).
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
            num_workers=max(1, min(os.cpu_count() or 1, p.num_chains)),
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
