"""Simulators for the simulation tests, imported by path on Dask workers (no tests here).

The tests put this directory on ``PYTHONPATH`` so that worker processes import this module
as ``test_simulation_helpers``. Faults that must happen once only across processes use a
marker file: the first call creates it and fails; later calls see it and succeed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "fail_above",
    "fail_once",
    "hang",
    "hang_once",
    "nan_above",
    "numpy_batched",
    "seed_echo",
    "sleepy",
    "touch",
    "wrong_shape",
]


def numpy_batched(theta: torch.Tensor) -> np.ndarray:
    """Batched numpy simulator: ``theta (N, D) + noise`` as a float64 array."""
    theta = np.asarray(theta, dtype=np.float64)
    return theta + 0.1 * np.random.standard_normal(theta.shape)


def seed_echo(theta: torch.Tensor, seed: int) -> np.ndarray:
    """Returns ``(N, 1)`` filled with ``seed % 1000003`` (checks the seed keyword)."""
    return np.full((theta.shape[0], 1), float(seed % 1000003))


def sleepy(theta: torch.Tensor, seconds_per_simulation: float = 0.1) -> torch.Tensor:
    """The linear Gaussian model, sleeping ``seconds_per_simulation`` per row."""
    time.sleep(seconds_per_simulation * theta.shape[0])
    return theta + 0.1 * torch.randn_like(theta)


def fail_above(theta: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Raises ValueError when a row's first parameter exceeds ``threshold``."""
    bad = theta[:, 0] > threshold
    if bool(bad.any()):
        raise ValueError(f"parameter {float(theta[bad][0, 0]):.3f} is above {threshold}")
    return theta + 0.1 * torch.randn_like(theta)


def _first_time(marker: str) -> bool:
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def fail_once(theta: torch.Tensor, marker: str) -> torch.Tensor:
    """Raises RuntimeError on the first call anywhere (``marker`` file absent), then works."""
    if _first_time(marker):
        raise RuntimeError("transient failure (first call)")
    return theta + 0.1 * torch.randn_like(theta)


def hang_once(theta: torch.Tensor, marker: str) -> torch.Tensor:
    """Hangs on the first call anywhere (``marker`` file absent), then works."""
    if _first_time(marker):
        time.sleep(3600)
    return theta + 0.1 * torch.randn_like(theta)


def hang(theta: torch.Tensor) -> torch.Tensor:
    """Never returns (well, after an hour)."""
    time.sleep(3600)
    return theta


def nan_above(theta: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """NaN summaries where the first parameter exceeds ``threshold``, inf where below -1.9."""
    x = theta + 0.1 * torch.randn_like(theta)
    x[theta[:, 0] > threshold] = float("nan")
    x[theta[:, 0] < -1.9, 0] = float("inf")
    return x


def wrong_shape(theta: torch.Tensor) -> torch.Tensor:
    """Returns one summary too many per row."""
    return torch.cat([theta, theta[:, :1]], dim=1)


def touch(path: str) -> None:
    """Create ``path`` (used to check where code runs)."""
    Path(path).touch()


def slow_once(theta: torch.Tensor, marker: str, seconds: float = 14.0) -> torch.Tensor:
    """Takes ``seconds`` on the first call anywhere (``marker`` file absent), then is quick."""
    if _first_time(marker):
        time.sleep(seconds)
    return theta + 0.1 * torch.randn_like(theta)
