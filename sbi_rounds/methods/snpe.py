"""SNPE (APT, Greenberg et al. 2019): NPE loss in round 1, the atomic loss after."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn
from torch.distributions import Distribution

from sbi_rounds.methods.base import DirectMethod
from sbi_rounds.strict import STRICT
from sbi_rounds.training.state import LossFn

__all__ = ["SNPE", "NPELossConfig", "atomic_loss", "npe_loss", "sample_atoms"]


class NPELossConfig(BaseModel):
    """SNPE's atomic (APT) loss settings."""

    model_config = STRICT

    num_atoms: int = Field(
        10,
        ge=2,
        title="Atoms",
        description="Parameters contrasted per sample in the atomic loss (the true one and "
        "num_atoms - 1 others of the batch).",
    )
    use_combined_loss: bool = Field(
        False,
        title="Add the MLE loss on prior samples",
        description="Add the plain NPE loss of the prior (round-1) samples to the atomic loss.",
    )


def npe_loss(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
    """Negative log-density ``-log q(theta | x)`` per sample ``(B,)``."""
    return model.loss(batch[0], batch[1])


def sample_atoms(batch_size: int, num_atoms: int, device: torch.device) -> Tensor:
    """For each row, ``num_atoms - 1`` distinct other rows, uniformly: ``(B, num_atoms - 1)``.

    Equivalent in distribution to sbi's ``multinomial`` over the off-diagonal, drawn as
    the indices of the smallest uniforms with the diagonal excluded.
    """
    scores = torch.rand(batch_size, batch_size, device=device)
    scores.fill_diagonal_(2.0)
    return scores.topk(num_atoms - 1, dim=1, largest=False).indices


def atomic_loss(
    prior: Distribution, num_atoms: int = 10, use_combined_loss: bool = False
) -> LossFn:
    """APT's atomic loss, as sbi's ``NPE_C`` computes it (derived from its private code).

    For each ``(theta_i, x_i)`` the contrasting atoms are ``num_atoms - 1`` other parameters
    of the batch; the loss is ``-log softmax_j(log q(theta_j|x_i) - log p(theta_j))`` at the
    true atom. With ``use_combined_loss``, prior samples also get the plain NPE loss.
    Batches are ``(theta (B, D), x (B, K), from_prior (B,))``.
    """

    def loss(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
        theta, x = batch[0], batch[1]
        b = theta.shape[0]
        k = min(num_atoms, b)
        if k < 2:
            raise ValueError("the atomic loss needs batches of at least 2 samples")
        choices = sample_atoms(b, k, theta.device)
        atoms = torch.cat((theta[:, None, :], theta[choices]), dim=1).reshape(b * k, -1)
        repeated_x = x.repeat_interleave(k, dim=0)
        log_prior = prior.log_prob(atoms).reshape(b, k)
        log_q = model.log_prob(atoms[None], repeated_x).reshape(b, k)
        logits = log_q - log_prior
        log_pp = logits[:, 0] - torch.logsumexp(logits, dim=-1)
        if use_combined_loss:
            log_pp = log_pp + batch[2] * model.log_prob(theta[None], x).squeeze(0)
        return -log_pp

    return loss


class SNPE(DirectMethod):
    """Sequential NPE with the atomic loss from round 2 on."""

    name: ClassVar[str] = "snpe"
    #: NSF for the posterior estimators: on sbibm's two_moons at 10 x 100 simulations,
    #: SNPE's C2ST went from 0.81 (MAF) to 0.60 (NSF), TSNPE's from 0.73 to 0.65
    #: (observation 1; benchmarks/README.md).
    default_network: ClassVar[str] = "nsf"
    #: Spline flows fit a narrow, nearly Gaussian posterior poorly and slowly (NSF: 41% too
    #: wide with 3 x 1,000 of ``x = theta + 0.1 eps``, in sbi's own loop too, at 2-3x MAF's
    #: time); an affine flow fits it. Round 1 trains MAF first and NSF only where the
    #: posterior is not Gaussian-like (``sbi_rounds.stages.network_choice``).
    simple_network: ClassVar[str | None] = "maf"
    settings_field: ClassVar[str | None] = "npe"
    loss_note: ClassVar[str] = (
        "For SNPE the loss itself changes: round 1 minimises the NPE loss (-log q(theta|x) "
        "on prior simulations), later rounds the atomic (APT) loss over contrasting "
        "parameter sets, whose values are on another scale."
    )

    def loss_fn(self, settings: NPELossConfig, prior: Distribution, round_: int) -> LossFn:
        """NPE loss in round 1; APT's atomic loss after."""
        if round_ == 1:
            return npe_loss
        return atomic_loss(prior, settings.num_atoms, settings.use_combined_loss)
