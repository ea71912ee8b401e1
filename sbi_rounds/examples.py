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
    "gaussian_linear",
    "gaussian_linear_prior",
    "gaussian_posterior",
    "gaussian_prior",
    "linear_gaussian",
    "linear_gaussian_single",
    "quadratic",
    "quadratic_posterior_samples",
    "slcp",
    "slcp_prior",
    "slow_linear_gaussian",
    "two_moons",
    "two_moons_prior",
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
    xobs: torch.Tensor,
    low: float,
    high: float,
    num_samples: int,
    noise_std: float = NOISE_STD,
    seed: int = 0,
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
    """sbibm's ``two_moons`` simulator (Greenberg et al. 2019): ``(N, 2) -> (N, 2)``.

    ``x = p + (-|theta_1 + theta_2| / sqrt 2, (theta_2 - theta_1) / sqrt 2)`` with ``p`` a
    point on a half circle: angle ``a ~ U(-pi/2, pi/2)``, radius ``r ~ N(0.1, 0.01^2)``,
    ``p = (r cos a + 0.25, r sin a)``. Its prior is :func:`two_moons_prior`.
    """
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


def two_moons_prior() -> Distribution:
    """sbibm's ``two_moons`` prior: uniform on ``[-1, 1]^2``."""
    from sbi.utils import BoxUniform

    return BoxUniform(-torch.ones(2), torch.ones(2))


#: sbibm's ``gaussian_linear``: variance of the prior and of the simulator's noise, per dimension.
GAUSSIAN_LINEAR_VARIANCE = 0.1


def gaussian_linear(theta: torch.Tensor | np.ndarray) -> torch.Tensor:
    """sbibm's ``gaussian_linear`` simulator: ``x ~ N(theta, 0.1 I)``, ``(N, 10) -> (N, 10)``.

    Its prior is :func:`gaussian_linear_prior`; the posterior is Gaussian in closed form.
    """
    theta = torch.as_tensor(theta, dtype=torch.float32)
    return theta + GAUSSIAN_LINEAR_VARIANCE**0.5 * torch.randn_like(theta)


def gaussian_linear_prior(dim: int = 10) -> Distribution:
    """sbibm's ``gaussian_linear`` prior: ``N(0, 0.1 I)`` over ``(dim,)``."""
    return MultivariateNormal(torch.zeros(dim), GAUSSIAN_LINEAR_VARIANCE * torch.eye(dim))


def slcp(theta: torch.Tensor | np.ndarray) -> torch.Tensor:
    """sbibm's ``slcp`` simulator (simple likelihood, complex posterior): ``(N, 5) -> (N, 8)``.

    Four i.i.d. draws from a 2-D Gaussian with mean ``(theta_1, theta_2)``, standard
    deviations ``theta_3^2`` and ``theta_4^2`` and correlation ``tanh(theta_5)`` (plus 1e-6 on
    the variances), flattened to ``(x_1, y_1, ..., x_4, y_4)``. Prior: :func:`slcp_prior`.
    """
    theta = torch.as_tensor(theta, dtype=torch.float32)
    n = theta.shape[0]
    s1, s2 = theta[:, 2] ** 2, theta[:, 3] ** 2
    rho = torch.tanh(theta[:, 4])
    cov = torch.empty(n, 2, 2)
    cov[:, 0, 0] = s1**2 + 1e-6
    cov[:, 0, 1] = cov[:, 1, 0] = rho * s1 * s2
    cov[:, 1, 1] = s2**2 + 1e-6
    # Cholesky by hand: stable for the nearly singular covariances the prior allows.
    l11 = cov[:, 0, 0].sqrt()
    l21 = cov[:, 1, 0] / l11
    l22 = (cov[:, 1, 1] - l21**2).clamp_min(0).sqrt()
    eps = torch.randn(n, 4, 2)
    x = theta[:, None, 0] + l11[:, None] * eps[..., 0]
    y = theta[:, None, 1] + l21[:, None] * eps[..., 0] + l22[:, None] * eps[..., 1]
    return torch.stack((x, y), dim=-1).reshape(n, 8)


def slcp_prior() -> Distribution:
    """sbibm's ``slcp`` prior: uniform on ``[-3, 3]^5``."""
    from sbi.utils import BoxUniform

    return BoxUniform(-3 * torch.ones(5), 3 * torch.ones(5))
