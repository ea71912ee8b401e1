"""A density fitted to posterior samples, and the log-density of its highest-density region."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.distributions.transforms import AffineTransform

__all__ = ["fitted_density", "fitted_threshold"]


def fitted_density(samples: Tensor) -> Any:
    """sbi's Gaussian KDE of ``samples (N, D)``, fitted in standardized coordinates.

    Each parameter is scaled to unit standard deviation first (the bandwidth rule assumes
    it), with Scott's bandwidth ``N ** (-1 / (D + 4))``; the returned density's
    ``log_prob(theta (M, D)) -> (M,)`` is in the original coordinates.
    """
    from sbi.utils import get_kde

    samples = samples.detach().reshape(len(samples), -1).float().cpu()
    mean, std = samples.mean(0), samples.std(0).clamp_min(1e-12)
    standardize = AffineTransform(loc=-mean / std, scale=1 / std)
    return get_kde(samples, bandwidth="scott", transform=standardize)


def fitted_threshold(samples: Tensor, quantile: float) -> tuple[Any, float]:
    """``(density, threshold)``: a KDE of half of ``samples (N, D)`` and the log-density
    above which it holds ``1 - quantile`` of the other half.

    The threshold comes from held-out samples: a kernel density at its own fitting points
    is raised by each point's own kernel, most in the sparse tails the threshold is set in.
    """
    half = len(samples) // 2
    density = fitted_density(samples[:half])
    log_probs, _ = torch.sort(density.log_prob(samples[half:].reshape(len(samples) - half, -1)))
    return density, float(log_probs[int(quantile * len(log_probs))])
