"""SNLE (Papamakarios et al. 2019): a likelihood network trained on all rounds, MCMC posterior."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel
from torch import Tensor, nn
from torch.distributions import Distribution

from sbi_rounds.methods.base import Builder, Role, density_builder
from sbi_rounds.methods.mcmc import PotentialMethod
from sbi_rounds.store.schema import NetworkArchitecture
from sbi_rounds.training.references import gaussian_baseline_losses
from sbi_rounds.training.state import LossFn

__all__ = ["SNLE", "nle_loss"]


def nle_loss(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
    """Negative log-likelihood ``-log q(x | theta)`` per sample ``(B,)``."""
    return model.loss(batch[1], batch[0])


class SNLE(PotentialMethod):
    """Sequential neural likelihood estimation."""

    name: ClassVar[str] = "snle"
    #: Its loss estimates the same likelihood (ratio) whatever the proposal was.
    trains_on_any_proposal: ClassVar[bool] = True
    role: ClassVar[Role] = "likelihood"
    default_network: ClassVar[str] = "maf"

    def loss_fn(self, settings: BaseModel | None, prior: Distribution, round_: int) -> LossFn:
        """The likelihood loss in every round."""
        return nle_loss

    def network_builder(self, architecture: NetworkArchitecture, embedding: nn.Module) -> Builder:
        """sbi's ``likelihood_nn``: a density of x given theta."""
        from sbi.neural_nets import likelihood_nn

        return density_builder(likelihood_nn, architecture, embedding)

    def stall_reference(
        self,
        network: nn.Module,
        loss_fn: LossFn,
        train_rows: Sequence[Tensor],
        val_rows: Sequence[Tensor],
        seed: int,
    ) -> tuple[Tensor, str]:
        """The best linear-Gaussian model of x given theta (``gaussian``)."""
        reference = gaussian_baseline_losses(train_rows[1], train_rows[0], val_rows[1], val_rows[0])
        return reference, "gaussian"

    def stall_dimensions(self, theta_dim: int, x_dim: int) -> int:
        """The likelihood's: ``x_dim``."""
        return x_dim

    def potential(self, network: nn.Module, prior: Distribution, xobs: Tensor) -> tuple[Any, Any]:
        """Prior times the learned likelihood at xobs."""
        from sbi.inference import likelihood_estimator_based_potential

        return likelihood_estimator_based_potential(network, prior, x_o=xobs)
