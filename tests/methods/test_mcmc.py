"""MCMC chain starts: prior draws resampled once by their weights."""

from __future__ import annotations

import torch
from sbi.utils import BoxUniform

from sbi_rounds.methods.mcmc import ResampledInits


class Potential:
    """Counts calls; log prior + log N(theta; (1, -1), 0.3^2 I) under a box prior."""

    def __init__(self, prior):
        self.prior, self.calls = prior, 0

    def __call__(self, theta):
        self.calls += 1
        target = torch.distributions.Normal(torch.tensor([1.0, -1.0]), 0.3)
        return self.prior.log_prob(theta) + target.log_prob(theta).sum(-1)


def test_resampled_inits_follow_the_weights_and_evaluate_one_batch():
    prior = BoxUniform(-5 * torch.ones(2), 5 * torch.ones(2))
    potential = Potential(prior)
    inits = ResampledInits(prior, potential, "sir", num_candidates=20_000)
    draws = torch.cat([inits.sample((1,)) for _ in range(500)] + [inits.sample((1500,))])
    assert draws.shape == (2000, 2) and potential.calls == 1  # one batch for every chain
    torch.testing.assert_close(draws.mean(0), torch.tensor([1.0, -1.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(draws.std(0), torch.tensor([0.3, 0.3]), atol=0.05, rtol=0)
    assert inits.sample().shape == (2,) and inits.sample((3, 4)).shape == (3, 4, 2)


def test_resample_weighs_by_the_potential_alone():
    prior = torch.distributions.MultivariateNormal(torch.zeros(2), 4 * torch.eye(2))
    flat = ResampledInits(prior, prior.log_prob, "sir", num_candidates=20_000)
    assert abs(float(flat.sample((4000,)).std(0).mean()) - 2.0) < 0.15  # weights all equal
    squared = ResampledInits(prior, prior.log_prob, "resample", num_candidates=20_000)
    assert abs(float(squared.sample((4000,)).std(0).mean()) - 2 / 2**0.5) < 0.15  # prior^2


def test_no_finite_weight_falls_back_to_prior_draws():
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    inits = ResampledInits(prior, lambda t: torch.full((len(t),), -torch.inf), "sir", 1000)
    draws = inits.sample((500,))
    assert draws.abs().max() <= 1 and draws.std(0).min() > 0.4
