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
    "quadratic",
    "quadratic_posterior_samples",
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


def quadratic(theta: torch.Tensor | np.ndarray, noise_std: float = NOISE_STD) -> torch.Tensor:
    """``x = theta^2 + noise_std * eps`` elementwise: ``(N, D) -> (N, D)``.

    Under a box prior symmetric around 0, the posterior has ``2^D`` modes at
    ``theta_i = +-sqrt(x_i)``: a multimodal problem with an exact likelihood.
    """
    theta = torch.as_tensor(theta, dtype=torch.float32)
    return theta**2 + noise_std * torch.randn_like(theta)


def quadratic_posterior_samples(
    xobs: torch.Tensor, low: float, high: float, num_samples: int,
    noise_std: float = NOISE_STD, seed: int = 0,
) -> torch.Tensor:
    """Exact posterior samples of ``quadratic`` under ``U[low, high]^D`` by rejection sampling.

    Proposes from the prior and accepts with probability ``exp(-|x_o - theta^2|^2 / 2s^2)``
    (the likelihood over its maximum), so the accepted draws follow the posterior exactly.

    Returns:
        Samples with shape ``(num_samples, D)``.
    """
    g = torch.Generator().manual_seed(seed)
    xobs = torch.as_tensor(xobs, dtype=torch.float32)
    accepted: list[torch.Tensor] = []
    count = 0
    while count < num_samples:
        theta = low + (high - low) * torch.rand(1_000_000, len(xobs), generator=g)
        log_accept = -((xobs - theta**2) ** 2).sum(1) / (2 * noise_std**2)
        keep = theta[torch.rand(len(theta), generator=g).log() < log_accept]
        accepted.append(keep)
        count += len(keep)
    return torch.cat(accepted)[:num_samples]


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
