"""SNRE: NRE-B (Durkan et al. 2020, contrastive) by default, NRE-C (Miller et al. 2022)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn
from torch.distributions import Distribution

from sbi_rounds.methods.base import Builder, Role
from sbi_rounds.methods.mcmc import PotentialMethod
from sbi_rounds.methods.snpe import sample_atoms
from sbi_rounds.store.schema import NetworkArchitecture
from sbi_rounds.strict import STRICT
from sbi_rounds.training.references import chance_losses
from sbi_rounds.training.state import LossFn

__all__ = ["SNRE", "NRELossConfig", "nre_b_loss", "nre_c_loss"]


class NRELossConfig(BaseModel):
    """SNRE's loss: NRE-B (contrastive, ``num_atoms``) or NRE-C (``num_classes``, ``gamma``)."""

    model_config = STRICT

    variant: Literal["b", "c"] = Field(
        "b", title="NRE variant", description="b: NRE-B (contrastive); c: NRE-C."
    )
    num_atoms: int = Field(
        10, ge=2, title="Atoms (NRE-B)", description="Parameters contrasted per sample (NRE-B)."
    )
    num_classes: int = Field(
        5, ge=1, title="Classes K (NRE-C)", description="Contrasting classes K of NRE-C."
    )
    gamma: float = Field(
        1.0, gt=0, title="Gamma (NRE-C)", description="Odds of a joint pair in NRE-C."
    )


def _atom_logits(model: nn.Module, theta: Tensor, x: Tensor, num_atoms: int) -> Tensor:
    """Classifier logits of ``x_i`` paired with ``theta_i`` then ``num_atoms - 1`` others."""
    b = theta.shape[0]
    choices = sample_atoms(b, num_atoms, theta.device)
    atoms = torch.cat((theta[:, None, :], theta[choices]), dim=1).reshape(b * num_atoms, -1)
    return model(atoms, x.repeat_interleave(num_atoms, dim=0)).reshape(b, num_atoms)


def nre_b_loss(num_atoms: int = 10) -> LossFn:
    """NRE-B: cross-entropy of picking the joint pair among ``num_atoms`` (per sample)."""

    def loss(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
        k = min(num_atoms, batch[0].shape[0])
        logits = _atom_logits(model, batch[0], batch[1], k)
        return -(logits[:, 0] - torch.logsumexp(logits, dim=-1))

    return loss


def nre_c_loss(num_classes: int = 5, gamma: float = 1.0) -> LossFn:
    """NRE-C's multi-class sigmoid loss with ``K = num_classes`` and weight ``gamma``."""
    log_gamma = math.log(gamma)
    p_marginal, p_joint = 1 / (1 + gamma), gamma / (1 + gamma)

    def loss(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
        theta, x = batch[0], batch[1]
        b = theta.shape[0]
        k = min(num_classes, b - 1)
        marginal = _atom_logits(model, theta, x, k + 1)[:, 1:]
        joint = _atom_logits(model, theta, x, k)
        pad = torch.full((b, 1), math.log(k), dtype=joint.dtype, device=joint.device)
        den_marginal = torch.cat([log_gamma + marginal, pad], dim=-1)
        den_joint = torch.cat([log_gamma + joint, pad], dim=-1)
        log_p_marginal = math.log(k) - torch.logsumexp(den_marginal, dim=-1)
        log_p_joint = log_gamma + joint[:, 0] - torch.logsumexp(den_joint, dim=-1)
        return -(p_marginal * log_p_marginal + p_joint * log_p_joint)

    return loss


class SNRE(PotentialMethod):
    """Sequential neural ratio estimation."""

    name: ClassVar[str] = "snre"
    #: Its loss estimates the same likelihood (ratio) whatever the proposal was.
    trains_on_any_proposal: ClassVar[bool] = True
    role: ClassVar[Role] = "classifier"
    default_network: ClassVar[str] = "resnet"
    settings_field: ClassVar[str | None] = "nre"

    def loss_fn(self, settings: NRELossConfig, prior: Distribution, round_: int) -> LossFn:
        """NRE-B or NRE-C, as ``settings.variant`` says."""
        n = settings
        return nre_b_loss(n.num_atoms) if n.variant == "b" else nre_c_loss(n.num_classes, n.gamma)

    def network_builder(self, architecture: NetworkArchitecture, embedding: nn.Module) -> Builder:
        """sbi's ``classifier_nn``: the logit of a (theta, x) pair being joint."""
        from sbi.neural_nets import classifier_nn

        a = architecture
        return classifier_nn(
            model=a.model,
            hidden_features=a.hidden_features,
            embedding_net_x=embedding,
            z_score_theta=a.z_score_theta,
            z_score_x=a.z_score_x,
        )

    def stall_reference(
        self,
        network: nn.Module,
        loss_fn: LossFn,
        train_rows: Sequence[Tensor],
        val_rows: Sequence[Tensor],
        seed: int,
    ) -> tuple[Tensor, str]:
        """A classifier at chance level, every logit 0 (``chance``)."""
        return chance_losses(loss_fn, val_rows, seed), "chance"

    def potential(self, network: nn.Module, prior: Distribution, xobs: Tensor) -> tuple[Any, Any]:
        """Prior times the learned ratio at xobs."""
        from sbi.inference import ratio_estimator_based_potential

        return ratio_estimator_based_potential(network, prior, x_o=xobs)
