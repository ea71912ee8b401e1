"""What every method provides: its loss per round, its posterior, and the next proposal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from sbi_rounds.config import RunConfig
from sbi_rounds.training.runner import LossFn

__all__ = ["Method", "Proposal", "TrainingData", "training_tensors"]


@dataclass(frozen=True, kw_only=True)
class Proposal:
    """A distribution to draw a round's parameters from, and its stored description."""

    distribution: Any  # has .sample((n,)); a torch Distribution or an sbi posterior
    description: dict[str, Any]


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


class Method(Protocol):
    """A sequential inference method. Implementations hold no per-run state."""

    name: ClassVar[str]

    def loss_fn(self, config: RunConfig, prior: Distribution, round_: int) -> LossFn:
        """Per-sample loss for training in ``round_`` (1-based)."""
        ...

    def posterior(
        self, config: RunConfig, network: nn.Module, prior: Distribution, xobs: Tensor
    ) -> Any:
        """The sbi posterior of the trained ``network`` with ``xobs`` as default x."""
        ...

    def proposal(
        self, config: RunConfig, posterior: Any, prior: Distribution, round_: int
    ) -> Proposal:
        """The proposal of ``round_ >= 2``, built from the previous round's posterior."""
        ...


def training_tensors(theta: list[Tensor], x: list[Tensor], rounds: list[int]) -> TrainingData:
    """Concatenate per-round valid data into one :class:`TrainingData`."""
    return TrainingData(
        theta=torch.cat(theta).float(),
        x=torch.cat(x).float(),
        round=torch.cat(
            [torch.full((len(t),), r, dtype=torch.long) for t, r in zip(theta, rounds, strict=True)]
        ),
    )
