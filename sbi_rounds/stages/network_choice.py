"""Which network round 1 trains and keeps when the user did not choose one.

A method with a ``simple_network`` (SNPE and TSNPE: the affine flow MAF, sbi's own default,
beside the spline flow NSF, their ``default_network``) trains the simple network first,
because it is the cheaper one (a third to a half of NSF's time per step on a CPU). Then:

* where the simple network fits the held-out rows no better than the best linear-Gaussian
  model (:func:`gaussian_like`), the posterior is Gaussian-like and a spline flow has
  nothing to add: the simple network is kept alone (a 2-D linear Gaussian at 1,000
  simulations: NSF took 2-3x MAF's time and ended 41% too wide in sbi's own loop);
* otherwise (the posterior is not Gaussian, or too few rows are held out to tell) the
  default network is trained too, on the same training and validation rows, and kept
  unless the simple one fits significantly better (:func:`simple_wins`): two_moons keeps
  NSF, and with ten held-out rows (10 x 100 simulations) the default stays.

Both rules compare per-row validation losses on the same rows by the mean of their paired
differences and its standard error, the same statistics as the stall check
(``sbi_rounds.stages.stall``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["GAUSSIAN_MARGIN", "SELECTION_SIGNIFICANCE", "gaussian_like", "simple_wins"]

#: Nats per modelled dimension by which the simple network must beat the linear-Gaussian
#: model before the posterior counts as not Gaussian.
GAUSSIAN_MARGIN = 0.05
#: Standard errors of the paired per-row differences that make a difference count.
SELECTION_SIGNIFICANCE = 2.0


def gaussian_like(excess: float, stderr: float, dims: int) -> bool:
    """Whether a network fits no better than the best linear-Gaussian model: even the
    most it may beat it by (``excess`` minus :data:`SELECTION_SIGNIFICANCE` standard
    errors) stays within :data:`GAUSSIAN_MARGIN` nats per dimension.

    Args:
        excess: Mean per-row validation loss of the network minus the linear-Gaussian
            model's, on the same rows (negative: the network fits better).
        stderr: Standard error of that mean (infinite with a single row).
        dims: Dimensions of what the network models (theta's for a posterior).
    """
    if not (math.isfinite(excess) and math.isfinite(stderr)):
        return False
    return excess - SELECTION_SIGNIFICANCE * stderr > -GAUSSIAN_MARGIN * dims


def simple_wins(simple: Tensor, default: Tensor) -> bool:
    """Whether the simple network's per-row validation losses ``simple (N,)`` are lower
    than the default network's ``default (N,)`` on the same rows by more than
    :data:`SELECTION_SIGNIFICANCE` standard errors of the paired differences (a default
    whose loss is not finite on some row loses to a finite simple one)."""
    simple, default = simple.double(), default.double()
    if not bool(torch.isfinite(default).all()):
        return bool(torch.isfinite(simple).all())
    diff = default - simple
    n = diff.shape[0]
    if n < 2 or not bool(torch.isfinite(diff).all()):
        return False
    stderr = float(diff.std() / math.sqrt(n))
    return float(diff.mean()) > SELECTION_SIGNIFICANCE * stderr
