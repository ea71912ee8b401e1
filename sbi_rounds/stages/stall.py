"""Stalled trainings: a network whose validation loss stays far above a simple reference.

A network that failed to train (a flow stuck in a poor optimum from its initialisation,
a training cut short) gives a posterior that can be as wide as the prior, and in sequential
inference it also poisons every later round's proposal. The check compares the trained
network's per-sample validation losses with a reference evaluated on the same rows, with
the same loss:

* a fresh network of a density estimator (round 1, or ``retrain_from_scratch``): the
  best Gaussian with a linear mean, ``target ~ N(W cond + b, S)``, fitted by least squares
  on the training rows (for NPE ``target = theta, cond = x``; for NLE the reverse);
* a fresh classifier (SNRE): the chance level, a classifier that answers 0 for everything
  (this only catches a classifier worse than guessing: one stuck at chance is not told
  apart from uninformative data);
* a fresh vector-field estimator (TFMPE, TNPSE): the same estimator with a network that
  outputs zero, i.e. the vector field of a Gaussian fitted to theta that ignores x (the
  estimators' own standardisation); its losses are squared errors, not nats, so the
  margin is only a loose bound there;
* a network continued from the previous round: the previous round's network, which the
  training started from.

The training is stalled when the mean excess loss exceeds ``margin`` nats per sample and
per modelled dimension, and ``significance`` standard errors of the paired differences,
or when the network's loss is not finite on some row.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from sbi_rounds.store.schema import StallCheckRecord
from sbi_rounds.training.references import (
    chance_losses,
    gaussian_baseline_losses,
    validation_losses,
    zero_field_losses,
)

if TYPE_CHECKING:  # the settings import the methods, which import these references
    from sbi_rounds.config import StallConfig

__all__ = [
    "StallCheck",
    "chance_losses",
    "check_stall",
    "gaussian_baseline_losses",
    "validation_losses",
    "zero_field_losses",
]


class StallCheck(StallCheckRecord):
    """The outcome of :func:`check_stall`: the record stored with the round's training
    (``StallCheckRecord``: whether it stalled, the reference, the losses, the excess and
    its standard error), and its description."""

    def record(self) -> dict[str, float | str | bool]:
        """As a JSON-ready dict."""
        return self.model_dump()

    def describe(self) -> str:
        """One line: the losses and the verdict."""
        verdict = "stalled" if self.stalled else "trained"
        return (
            f"{verdict}: validation loss {self.loss:.3f} vs {self.reference_loss:.3f} of the "
            f"{self.reference.replace('_', ' ')} reference (excess {self.excess:+.3f} "
            f"+- {self.stderr:.3f})"
        )


def check_stall(
    losses: Tensor,
    reference_losses: Tensor,
    reference: str,
    config: StallConfig,
    dims: int = 1,
) -> StallCheck:
    """Compare per-row validation losses ``(N,)`` with a reference's on the same rows.

    ``dims`` is the dimension of what the network models (``D`` of theta for a posterior
    estimator, ``K`` of x for a likelihood, 1 for a classifier): the margin is per dimension,
    since a density's loss, and its shortfall with little data, grow with it.
    """
    diff = losses.double() - reference_losses.double()
    n = diff.shape[0]
    excess = float(diff.mean())
    stderr = float(diff.std() / math.sqrt(n)) if n > 1 else math.inf
    if not bool(torch.isfinite(losses).all()):  # a network with NaN or infinite losses failed
        stalled, excess = True, math.inf
    else:  # (a reference that is not finite everywhere proves nothing: NaN compares False)
        stalled = excess > config.margin * dims and excess > config.significance * stderr
    return StallCheck(
        stalled=bool(stalled),
        reference=reference,
        loss=float(losses.mean()),
        reference_loss=float(reference_losses.mean()),
        excess=excess,
        stderr=stderr,
    )
