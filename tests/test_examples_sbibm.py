"""sbibm's bernoulli_glm and slcp_distractors as plain torch: shapes, seeds, and sbibm's own
stored observations plausible under them (so that sbibm's reference posteriors apply)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sbi_rounds.examples import (
    bernoulli_glm,
    bernoulli_glm_design,
    bernoulli_glm_prior,
    slcp,
    slcp_distractor_parameters,
    slcp_distractors,
    slcp_distractors_prior,
)

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize(
    ("simulator", "prior", "dims"),
    [
        (bernoulli_glm, bernoulli_glm_prior, (10, 10)),
        (slcp_distractors, slcp_distractors_prior, (5, 100)),
    ],
)
def test_shapes_and_the_same_draws_from_the_same_seed(simulator, prior, dims):
    theta = prior().sample((7,))
    assert theta.shape == (7, dims[0])
    torch.manual_seed(3)
    x = simulator(theta)
    assert x.shape == (7, dims[1]) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    torch.manual_seed(3)
    assert torch.equal(simulator(theta), x)
    assert not torch.equal(simulator(theta), x)  # the generator moved on
    assert simulator(theta.numpy()).shape == x.shape  # numpy in, as the runners pass it


def test_bernoulli_glm_summaries_are_the_spike_count_and_stimulus_sums():
    torch.manual_seed(0)
    x = bernoulli_glm(bernoulli_glm_prior().sample((500,)))
    assert ((x[:, 0] >= 0) & (x[:, 0] <= 100)).all()
    assert torch.equal(x[:, 0], x[:, 0].round())
    offset_only = torch.zeros(3, 10)
    offset_only[:, 0] = -50.0  # a rate of sigmoid(-50): no spike
    silent = bernoulli_glm(offset_only)
    assert (silent == 0).all()  # no spike: every statistic is 0


def test_bernoulli_glm_prior_is_sbibms_smoothing_gaussian():
    prior = bernoulli_glm_prior()
    precision = prior.precision_matrix
    assert precision[0, 0] == pytest.approx(0.5) and (precision[0, 1:] == 0).all()
    assert torch.allclose(precision, precision.T)
    assert prior.mean.abs().max() == 0
    assert torch.linalg.eigvalsh(precision).min() > 0


def test_slcp_distractors_keeps_slcps_outputs_in_its_order():
    theta = torch.tensor([[0.7, -2.9, -1.0, -0.9, 0.6]]).repeat(4, 1)
    torch.manual_seed(1)
    x = slcp_distractors(theta)
    torch.manual_seed(1)
    data = slcp(theta)  # slcp draws first, so its outputs are the same numbers
    permutation = slcp_distractor_parameters()[2]
    slots = permutation < 8
    assert torch.equal(x[:, slots], data[:, permutation[slots]])


# --- against sbibm's stored files ---------------------------------------------------------------
@pytest.fixture(scope="module")
def sbibm_tasks() -> Path:
    sys.path.insert(0, str(BENCHMARKS))
    from bench_sbibm import fetch_data

    try:
        return fetch_data(BENCHMARKS / "out" / "sbibm", ["bernoulli_glm", "slcp_distractors"])
    except Exception as e:  # no network, no pip download
        pytest.skip(f"sbibm's data files could not be fetched: {e}")


def _csv(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)).float()


def test_the_fixed_parameters_are_sbibms(sbibm_tasks):
    design = torch.load(sbibm_tasks / "bernoulli_glm/files/design_matrix.pt", weights_only=True)
    assert torch.equal(design, bernoulli_glm_design())
    permutation = torch.load(sbibm_tasks / "slcp/files/permutation_idx.torch", weights_only=True)
    assert torch.equal(permutation, slcp_distractor_parameters()[2])


def test_bernoulli_glm_observation_1_is_plausible_at_its_true_parameters(sbibm_tasks):
    folder = sbibm_tasks / "bernoulli_glm/files/num_observation_1"
    theta, xobs = _csv(folder / "true_parameters.csv"), _csv(folder / "observation.csv")[0]
    x = bernoulli_glm(theta.repeat(10_000, 1))
    z = (xobs - x.mean(0)) / x.std(0)
    assert z.abs().max() < 3.5, z
    raw = _csv(folder / "observation_raw.csv")[0]  # sbibm's spike train: our summaries of it
    assert torch.allclose(raw @ bernoulli_glm_design(), xobs, atol=1e-4)


def test_slcp_distractors_observation_1_is_slcps_with_plausible_distractors(sbibm_tasks):
    folder = sbibm_tasks / "slcp/files/num_observation_1"
    xobs = _csv(folder / "observation_distractors.csv")[0]
    permutation = slcp_distractor_parameters()[2]
    slots = permutation < 8
    assert torch.allclose(xobs[slots], _csv(folder / "observation.csv")[0][permutation[slots]])
    theta = _csv(folder / "true_parameters.csv")
    x = slcp_distractors(theta.repeat(20_000, 1))[:, ~slots].double()
    low, high = torch.quantile(x, torch.tensor([0.01, 0.99], dtype=torch.float64), dim=0)
    inside = ((xobs[~slots] >= low) & (xobs[~slots] <= high)).float().mean()
    assert inside > 0.9, inside  # 98% expected; a wrong mixture puts most outside
