"""Posteriors from a potential (likelihood or ratio): MCMC, rejection or importance sampling."""

from __future__ import annotations

from typing import Any

import torch
from sbi.inference import ImportanceSamplingPosterior, MCMCPosterior, RejectionPosterior
from torch import Tensor
from torch.distributions import Distribution

from sbi_rounds.config import RunConfig

__all__ = ["ResampledInits", "potential_posterior"]


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
            candidates = self.prior.sample((self.num_candidates,)).reshape(
                self.num_candidates, -1
            )
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
    config: RunConfig, potential_fn: Any, theta_transform: Any, prior: Distribution, xobs: Tensor
) -> Any:
    """The sbi posterior sampling ``potential_fn`` as ``config.posterior`` says.

    MCMC runs ``num_chains`` chains; ``slice_np_vectorized`` advances them together in one
    vectorized step (the network evaluates all chains in one batch on the torch threads),
    and ``mcmc_workers > 1`` splits the chains across that many processes. The chains start
    from :class:`ResampledInits` (``sir``, ``resample``) or from prior draws (``proposal``).
    """
    p = config.posterior
    sampler = config.posterior_sampler
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
        raise ValueError(
            f"posterior.sampler={sampler!r} does not apply to {config.method}; use mcmc, "
            "rejection or importance"
        )
    return post.set_default_x(xobs)
