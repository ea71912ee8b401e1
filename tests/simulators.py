"""Simulators for tests, importable on Dask workers (conftest puts tests/ on PYTHONPATH)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from sbi_rounds.examples import linear_gaussian


def wrong_shape(theta: torch.Tensor) -> torch.Tensor:
    """Returns three summaries where the default xobs has two."""
    return torch.cat([theta, theta[:, :1]], dim=1)


def returns_strings(theta: torch.Tensor) -> np.ndarray:
    """Returns text instead of numbers."""
    return np.array([["a", "b"]] * len(theta))


def mostly_nan(theta: torch.Tensor) -> torch.Tensor:
    """NaN for every row whose first parameter is above -1.5 (most of the prior)."""
    x = linear_gaussian(theta)
    x[theta[:, 0] > -1.5] = float("nan")
    return x


def some_nan(theta: torch.Tensor) -> torch.Tensor:
    """NaN or inf for rows whose first parameter is above 1.8 (a few percent)."""
    x = linear_gaussian(theta)
    x[theta[:, 0] > 1.8, 0] = float("inf")
    return x


def counting(theta: torch.Tensor) -> torch.Tensor:
    """The linear Gaussian model; appends the number of rows to $SBI_ROUNDS_COUNT_FILE."""
    with Path(os.environ["SBI_ROUNDS_COUNT_FILE"]).open("a") as f:
        f.write(f"{len(theta)}\n")
    return linear_gaussian(theta)


def gaussian_prior_2d() -> torch.distributions.Distribution:
    """N(0, I) over two parameters: conjugate to the linear Gaussian model."""
    return torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))


def small_embedding() -> torch.nn.Module:
    """An embedding network for two summaries: ``(B, 2) -> (B, 4)``."""
    return torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))


def ignores_theta(theta: torch.Tensor) -> torch.Tensor:
    """Noise that does not depend on the parameters: the posterior stays the prior."""
    return torch.randn(len(theta), 2)


def sleepy(theta: torch.Tensor) -> torch.Tensor:
    """The linear Gaussian model, 0.05 s per simulation (a slow simulator)."""
    import time

    time.sleep(0.05 * len(theta))
    return linear_gaussian(theta)


def fills_the_disk(theta: torch.Tensor) -> torch.Tensor:
    """The linear Gaussian model; the first chunk (more than the start-up check's 2 rows) fills
    the file system of ``$SBI_ROUNDS_BALLAST`` with that file first, as another program would."""
    ballast = Path(os.environ["SBI_ROUNDS_BALLAST"])
    if len(theta) > 2 and not ballast.exists():
        fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while os.write(fd, b"\1" * 65536) > 0:
                pass
        except OSError:  # ENOSPC: full
            pass
        finally:
            os.close(fd)
    return linear_gaussian(theta)


def fails_on_chunks(theta: torch.Tensor) -> torch.Tensor:
    """Passes the start-up check (2 rows), raises a two-line error on every chunk."""
    if len(theta) > 2:
        raise RuntimeError("the model diverged at step 7\nwhile integrating the second stage")
    return linear_gaussian(theta)
