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

import copy
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from sbi_rounds.store.schema import StallCheckRecord
from sbi_rounds.training.runner import VALIDATION_BATCH, LossFn

if TYPE_CHECKING:  # the settings import the methods, which import these references
    from sbi_rounds.config import StallConfig

__all__ = [
    "StallCheck",
    "chance_losses",
    "check_stall",
    "zero_field_losses",
    "gaussian_baseline_losses",
    "validation_losses",
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


@torch.inference_mode()
def validation_losses(
    model: nn.Module, loss_fn: LossFn, val: Sequence[Tensor], seed: int
) -> Tensor:
    """Per-row losses ``(N,)`` of ``model`` on the rows ``val`` (tensors ``(N, ...)``).

    Evaluated in batches of the runner's validation size with the global RNG seeded by
    ``seed`` (a loss that draws atoms draws the same ones for any model), in eval mode.
    """
    was_training = model.training
    model.eval()
    n = val[0].shape[0]
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, n, VALIDATION_BATCH):
            out.append(loss_fn(model, tuple(t[start : start + VALIDATION_BATCH] for t in val)))
    model.train(was_training)
    return torch.cat(out).detach().double()


def gaussian_baseline_losses(
    target_train: Tensor, cond_train: Tensor, target_val: Tensor, cond_val: Tensor
) -> Tensor:
    """Negative log-density ``(N_val,)`` of the best linear-Gaussian conditional model.

    Fits ``target = W cond + b + e``, ``e ~ N(0, S)``, by (lightly ridged) least squares on
    the training rows ``target_train (N, D)``, ``cond_train (N, K)``, and evaluates
    ``-log N(target_val; W cond_val + b, S)`` per validation row.
    """
    t, c = target_train.double(), cond_train.double()
    c_mean, c_std = c.mean(0), c.std(0).clamp_min(1e-12)
    design = torch.cat([(c - c_mean) / c_std, torch.ones(len(c), 1, dtype=c.dtype)], dim=1)
    gram = design.T @ design + 1e-6 * len(c) * torch.eye(design.shape[1], dtype=c.dtype)
    coef = torch.linalg.solve(gram, design.T @ t)
    resid = t - design @ coef
    dim = t.shape[1]
    cov = resid.T @ resid / max(1, len(t) - design.shape[1])
    cov = cov + 1e-9 * cov.diagonal().mean().clamp_min(1e-12) * torch.eye(dim, dtype=c.dtype)
    cv = cond_val.double()
    design_val = torch.cat([(cv - c_mean) / c_std, torch.ones(len(cv), 1, dtype=c.dtype)], dim=1)
    normal = torch.distributions.MultivariateNormal(design_val @ coef, covariance_matrix=cov)
    return -normal.log_prob(target_val.double())


class _ZeroClassifier(nn.Module):
    """A ratio estimator that knows nothing: logit 0 for every pair."""

    def forward(self, theta: Tensor, x: Tensor) -> Tensor:
        return torch.zeros(theta.shape[0], dtype=theta.dtype, device=theta.device)


def chance_losses(loss_fn: LossFn, val: Sequence[Tensor], seed: int) -> Tensor:
    """Per-row losses ``(N,)`` of a classifier at chance level (every logit 0)."""
    return validation_losses(_ZeroClassifier(), loss_fn, val, seed)


class _ZeroField(nn.Module):
    """A vector-field network that knows nothing: zero for every input."""

    def forward(self, input: Tensor, condition: Tensor, time: Tensor) -> Tensor:
        return torch.zeros_like(input)


def zero_field_losses(
    model: nn.Module, loss_fn: LossFn, val: Sequence[Tensor], seed: int
) -> Tensor:
    """Per-row losses ``(N,)`` of ``model`` (an sbi vector-field estimator) with its network
    replaced by zeros: the Gaussian vector field its standardisation implies, blind to x."""
    reference = copy.deepcopy(model)
    reference.net = _ZeroField()
    return validation_losses(reference, loss_fn, val, seed)


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
