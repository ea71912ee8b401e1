"""SNLE (Papamakarios et al. 2019): a likelihood network trained on all rounds, MCMC posterior."""

from __future__ import annotations

from typing import Any, ClassVar

from sbi.inference import likelihood_estimator_based_potential
from torch import Tensor, nn
from torch.distributions import Distribution

from sbi_rounds.config import RunConfig
from sbi_rounds.methods.base import Proposal
from sbi_rounds.methods.mcmc import potential_posterior
from sbi_rounds.training.runner import LossFn

__all__ = ["SNLE", "nle_loss"]


def nle_loss(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
    """Negative log-likelihood ``-log q(x | theta)`` per sample ``(B,)``."""
    return model.loss(batch[1], batch[0])


class SNLE:
    """Sequential neural likelihood estimation."""

    name: ClassVar[str] = "snle"

    def loss_fn(self, config: RunConfig, prior: Distribution, round_: int) -> LossFn:
        """The likelihood loss in every round."""
        return nle_loss

    def posterior(
        self, config: RunConfig, network: nn.Module, prior: Distribution, xobs: Tensor
    ) -> Any:
        """Prior times the learned likelihood at xobs, sampled as configured (MCMC)."""
        potential, transform = likelihood_estimator_based_potential(network, prior, x_o=xobs)
        return potential_posterior(config, potential, transform, prior, xobs)

    def proposal(
        self, config: RunConfig, posterior: Any, prior: Distribution, round_: int
    ) -> Proposal:
        """The previous round's posterior at xobs."""
        return Proposal(
            distribution=posterior, description={"kind": "posterior", "round": round_ - 1}
        )
