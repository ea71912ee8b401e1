"""Built-in example simulators and priors (the CLI's default problem and test models).

The default problem is a linear Gaussian model: ``x = theta + 0.1 * eps`` with
``eps ~ N(0, I)`` under a uniform prior on ``[-2, 2]^D``. Its posterior at ``x_o`` is
``N(x_o, 0.1^2 I)`` truncated to the box, which for ``x_o`` inside the box (more than
5 noise widths from its edges) is the Gaussian itself to within 1e-6 of mass.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import torch
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

__all__ = [
    "NOISE_STD",
    "bernoulli_glm",
    "bernoulli_glm_design",
    "bernoulli_glm_prior",
    "gaussian_linear",
    "gaussian_linear_prior",
    "gaussian_posterior",
    "gaussian_prior",
    "linear_gaussian",
    "linear_gaussian_single",
    "quadratic",
    "quadratic_posterior_samples",
    "slcp",
    "slcp_distractor_parameters",
    "slcp_distractors",
    "slcp_distractors_prior",
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


#: sbibm's ``bernoulli_glm``: time steps of the white-noise stimulus and the seed that froze it.
BERNOULLI_GLM_STEPS = 100
BERNOULLI_GLM_STIMULUS_SEED = 42


@functools.cache
def bernoulli_glm_design() -> torch.Tensor:
    """sbibm's ``bernoulli_glm`` design matrix, with shape ``(100, 10)``.

    Column 0 is the offset (ones); column ``j + 1`` is the stimulus delayed by ``j`` steps
    (zeros before it starts), the stimulus being ``N(0, 1)`` white noise drawn from
    ``numpy.random.RandomState(42)`` once, as sbibm froze it.
    """
    stimulus = np.random.RandomState(BERNOULLI_GLM_STIMULUS_SEED).randn(BERNOULLI_GLM_STEPS)
    stimulus = torch.from_numpy(stimulus.astype(np.float32))
    design = torch.zeros(BERNOULLI_GLM_STEPS, 10)
    design[:, 0] = 1.0
    for j in range(9):
        design[j:, j + 1] = stimulus[: BERNOULLI_GLM_STEPS - j]
    return design


def bernoulli_glm(theta: torch.Tensor | np.ndarray) -> torch.Tensor:
    """sbibm's ``bernoulli_glm`` simulator (sufficient statistics): ``(N, 10) -> (N, 10)``.

    A spike train of 100 steps with ``P(spike at t) = sigmoid(design[t] . theta)``
    (:func:`bernoulli_glm_design`: an offset and a 9-step linear filter of the stimulus),
    summarized as sbibm does: the number of spikes and the spike-triggered sums of the
    stimulus at delays 0-8, i.e. ``design.T @ spikes``. Its prior is
    :func:`bernoulli_glm_prior`.
    """
    theta = torch.as_tensor(theta, dtype=torch.float32)
    design = bernoulli_glm_design()
    rate = torch.sigmoid(theta @ design.T)
    spikes = (torch.rand(rate.shape) < rate).float()
    return spikes @ design


def bernoulli_glm_prior() -> Distribution:
    """sbibm's ``bernoulli_glm`` prior over ``(10,)``: a zero-mean Gaussian with precision
    0.5 on the offset and, on the filter, ``F.T F`` with ``F = D^2 + diag(sqrt(i / 9))``
    (``D``: first differences), which favours smooth filters."""
    m = 9
    d = torch.eye(m) - torch.diag(torch.ones(m - 1), -1)
    f = d @ d + torch.diag((torch.arange(m) / m) ** 0.5)
    precision = torch.zeros(m + 1, m + 1)
    precision[0, 0] = 0.5
    precision[1:, 1:] = f.T @ f
    return MultivariateNormal(torch.zeros(m + 1), precision_matrix=precision)


#: sbibm's ``slcp_distractors``: 92 distractors from a fixed 20-component Student-t mixture.
SLCP_DISTRACTORS = 92
SLCP_DISTRACTOR_COMPONENTS = 20
SLCP_DISTRACTOR_SEED = 42


@functools.cache
def slcp_distractor_parameters() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """sbibm's fixed distractor mixture and output order, drawn as sbibm drew them.

    From ``numpy.random.RandomState(42)``, in this order: 20 locations ``15 * N(0, I)``,
    20 scale factors ``3 * (tril(N(0, 1) matrix) + diag(exp(N(0, 1))))``, then the
    permutation of the 100 outputs.

    Returns:
        ``(loc, scale_tril, permutation)`` with shapes ``(20, 92)``, ``(20, 92, 92)``
        (float64) and ``(100,)``.
    """
    rng = np.random.RandomState(SLCP_DISTRACTOR_SEED)
    n, k = SLCP_DISTRACTORS, SLCP_DISTRACTOR_COMPONENTS
    loc = np.array([15 * rng.normal(size=n) for _ in range(k)])
    tril = [
        np.tril(rng.normal(size=(n, n))) + np.diag(np.exp(rng.normal(size=n))) for _ in range(k)
    ]
    permutation = rng.permutation(n + 8)
    return (
        torch.from_numpy(loc),
        torch.from_numpy(3 * np.array(tril)),
        torch.from_numpy(permutation),
    )


def slcp_distractors(theta: torch.Tensor | np.ndarray) -> torch.Tensor:
    """sbibm's ``slcp_distractors`` simulator: ``(N, 5) -> (N, 100)``.

    :func:`slcp`'s 8 outputs and 92 distractors that do not depend on ``theta`` (one draw
    from an equal-weight mixture of 20 multivariate Student-t with 2 degrees of freedom,
    :func:`slcp_distractor_parameters`), in sbibm's fixed shuffled order. The posterior is
    :func:`slcp`'s. Prior: :func:`slcp_distractors_prior`.
    """
    data = slcp(theta)
    n = data.shape[0]
    loc, scale_tril, permutation = slcp_distractor_parameters()
    component = torch.randint(SLCP_DISTRACTOR_COMPONENTS, (n,))
    z = torch.randn(n, SLCP_DISTRACTORS, dtype=torch.float64)
    chi2 = torch.distributions.Chi2(torch.tensor(2.0, dtype=torch.float64)).sample((n,))
    z = z * torch.rsqrt(chi2 / 2)[:, None]
    noise = torch.empty(n, SLCP_DISTRACTORS, dtype=torch.float64)
    for c in range(SLCP_DISTRACTOR_COMPONENTS):
        rows = component == c
        noise[rows] = loc[c] + z[rows] @ scale_tril[c].T
    return torch.cat((data, noise.float()), dim=1)[:, permutation]


def slcp_distractors_prior() -> Distribution:
    """sbibm's ``slcp_distractors`` prior: :func:`slcp_prior`, uniform on ``[-3, 3]^5``."""
    return slcp_prior()
