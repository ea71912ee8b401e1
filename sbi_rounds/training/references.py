"""Reference losses: what a simple model scores on the same validation rows.

The stalled-training check (``sbi_rounds.stages.stall``) and the round-1 network choice
compare a trained network's per-sample validation losses with one of these references,
evaluated with the same loss on the same rows: the best Gaussian with a linear mean
(density estimators), the chance level (classifiers), a zero vector field (vector-field
estimators). The methods name theirs (``Method.stall_reference``).

May import: torch and ``sbi_rounds.training`` only.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sbi_rounds.training.runner import VALIDATION_BATCH, LossFn

__all__ = ["chance_losses", "gaussian_baseline_losses", "validation_losses", "zero_field_losses"]


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
