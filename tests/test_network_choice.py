"""Round 1's choice between the simple and the default network, on per-row losses."""

from __future__ import annotations

import math

import torch

from sbi_rounds.stages.network_choice import (
    GAUSSIAN_MARGIN,
    SELECTION_SIGNIFICANCE,
    gaussian_like,
    simple_wins,
)


def test_gaussian_like_needs_the_network_bounded_near_the_linear_gaussian_model():
    # no better than the linear-Gaussian model, tightly measured: Gaussian-like
    assert gaussian_like(excess=0.05, stderr=0.02, dims=2)
    # better by a clear margin: not Gaussian-like
    assert not gaussian_like(excess=-0.5, stderr=0.02, dims=2)
    # a tie measured on few rows cannot rule a better fit out: not Gaussian-like
    assert not gaussian_like(excess=0.0, stderr=0.5, dims=2)
    # the margin is per modelled dimension
    edge = -GAUSSIAN_MARGIN * 4 + SELECTION_SIGNIFICANCE * 0.01
    assert gaussian_like(excess=edge + 1e-6, stderr=0.01, dims=4)
    assert not gaussian_like(excess=edge + 1e-6, stderr=0.01, dims=1)
    for bad in (math.inf, math.nan):
        assert not gaussian_like(excess=bad, stderr=0.01, dims=2)
        assert not gaussian_like(excess=0.0, stderr=bad, dims=2)


def test_the_simple_network_wins_only_when_significantly_better():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(400, generator=g)
    default = 1.0 + noise
    assert simple_wins(default - 0.5 + 0.1 * torch.randn(400, generator=g), default)
    assert not simple_wins(default + 0.5, default)  # worse
    assert not simple_wins(default - 0.01 + torch.randn(400, generator=g), default)  # noise
    # ten rows, one carries the difference: not significant
    few = torch.zeros(10)
    assert not simple_wins(torch.tensor([-5.0] + [0.0] * 9), few)
    assert not simple_wins(torch.zeros(1) - 1.0, torch.zeros(1))  # one row tells nothing
    # a default whose loss is not finite loses to a finite simple network, not to another
    assert simple_wins(torch.zeros(5), torch.tensor([0.0, 0.0, math.inf, 0.0, 0.0]))
    assert not simple_wins(
        torch.tensor([math.nan] * 5), torch.tensor([0.0, 0.0, math.inf, 0.0, 0.0])
    )
