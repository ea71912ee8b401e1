"""Built-in example simulators and priors (the CLI's default problem and test models).

The default problem is a linear Gaussian model: ``x = theta + 0.1 * eps`` with
``eps ~ N(0, I)`` under a uniform prior on ``[-2, 2]^D``. Its posterior at ``x_o`` is
``N(x_o, 0.1^2 I)`` truncated to the box, which for ``x_o`` inside the box (more than
5 noise widths from its edges) is the Gaussian itself to within 1e-6 of mass.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

__all__ = [
    "NOISE_STD",
    "gaussian_posterior",
    "gaussian_prior",
    "linear_gaussian",
    "linear_gaussian_single",
    "slow_linear_gaussian",
    "two_moons",
]

#: Standard deviation of the linear Gaussian model's noise.
NOISE_STD = 0.1


def linear_gaussian(theta: torch.Tensor | np.ndarray, noise_std: float = NOISE_STD) -> torch.Tensor:
    """Batched linear Gaussian simulator.

    Args:
        theta: Parameters, with shape ``(N, D)``.
        noise_std: Standard deviation of the additive Gaussian noise.

    Returns:
        Simulations ``x = theta + noise_std * eps``, with shape ``(N, D)``.
    """
    theta = torch.as_tensor(theta, dtype=torch.float32)
    return theta + noise_std * torch.randn_like(theta)


def linear_gaussian_single(theta: np.ndarray, noise_std: float = NOISE_STD) -> np.ndarray:
    """Per-sample linear Gaussian simulator in numpy: ``(D,) -> (D,)``."""
    theta = np.asarray(theta, dtype=np.float64)
    return theta + noise_std * np.random.standard_normal(theta.shape)


def slow_linear_gaussian(
    theta: torch.Tensor | np.ndarray, seconds_per_simulation: float = 0.02
) -> torch.Tensor:
    """The linear Gaussian model, busy-waiting ``seconds_per_simulation`` per row (CPU-bound).

    Args:
        theta: Parameters, with shape ``(N, D)``.
        seconds_per_simulation: CPU time burnt per simulation, to mimic a real simulator.

    Returns:
        Simulations with shape ``(N, D)``.
    """
    theta = torch.as_tensor(theta, dtype=torch.float32)
    deadline = time.perf_counter() + seconds_per_simulation * theta.shape[0]
    acc = 0.0
    while time.perf_counter() < deadline:
        acc += sum(i * i for i in range(200))  # pure Python work: holds the GIL like real code
    return linear_gaussian(theta)


def two_moons(theta: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The two-moons simulator of sbibm (Greenberg et al. 2019): ``(N, 2) -> (N, 2)``."""
    theta = torch.as_tensor(theta, dtype=torch.float32)
    n = theta.shape[0]
    a = (torch.rand(n) - 0.5) * torch.pi
    r = 0.1 + 0.01 * torch.randn(n)
    p = torch.stack((r * torch.cos(a) + 0.25, r * torch.sin(a)), dim=1)
    z0 = -(theta[:, 0] + theta[:, 1]).abs() / np.sqrt(2)
    z1 = (-theta[:, 0] + theta[:, 1]) / np.sqrt(2)
    return p + torch.stack((z0, z1), dim=1)


def gaussian_prior(dim: int = 2, scale: float = 1.0) -> Distribution:
    """A standard normal prior ``N(0, scale^2 I)`` over ``(dim,)`` (conjugate to the model)."""
    return MultivariateNormal(torch.zeros(dim), scale**2 * torch.eye(dim))


def gaussian_posterior(
    xobs: torch.Tensor, prior_scale: float = 1.0, noise_std: float = NOISE_STD
) -> Distribution:
    """Closed-form posterior of ``linear_gaussian`` under ``gaussian_prior``.

    Args:
        xobs: The observation, with shape ``(D,)``.

    Returns:
        ``N(m, s^2 I)`` with ``s^2 = 1 / (1/prior_scale^2 + 1/noise_std^2)`` and
        ``m = s^2 xobs / noise_std^2``.
    """
    var = 1.0 / (1.0 / prior_scale**2 + 1.0 / noise_std**2)
    mean = var * torch.as_tensor(xobs, dtype=torch.float32) / noise_std**2
    return Independent(Normal(mean, torch.full_like(mean, var**0.5)), 1)
