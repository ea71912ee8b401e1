"""Leakage: the posterior's fraction inside the prior, measured, recorded, warned about and
bounding how long sampling may take (``sbi_rounds.methods.leakage``)."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from sbi.inference import NPE
from sbi.utils import BoxUniform

from sbi_rounds.errors import LeakageError
from sbi_rounds.methods import METHODS
from sbi_rounds.methods.leakage import (
    MAX_PRIOR_MASS_DRAWS,
    MAX_REJECTION_BATCHES,
    PRIOR_MASS_DRAWS,
    check_sampling_time,
    leakage_stop,
    measure_prior_mass,
    measure_truncation,
    percent,
    quiet_acceptance_warnings,
    rejection_batches,
    truncation_stop,
)
from sbi_rounds.store import PriorMass


@pytest.fixture(scope="module")
def edge_estimator():
    """An NPE spline flow for ``x = theta + 0.1 eps`` under U[0, 1]^2, trained by sbi."""
    torch.manual_seed(0)
    prior = BoxUniform(torch.zeros(2), torch.ones(2))
    theta = prior.sample((500,))
    x = theta + 0.1 * torch.randn_like(theta)
    inference = NPE(prior, density_estimator="nsf", show_progress_bars=False)
    estimator = inference.append_simulations(theta, x).train(max_num_epochs=40)
    return inference, estimator


def _posterior(edge_estimator, xobs):
    inference, estimator = edge_estimator
    return inference.build_posterior(estimator).set_default_x(torch.tensor(xobs))


def test_the_fraction_inside_the_prior_is_sbis_acceptance_rate(edge_estimator):
    """At an xobs by the prior's corner part of the mass leaks; the measured fraction is what
    sbi's own ``leakage_correction`` (its rejection sampler's acceptance rate) finds."""
    posterior = _posterior(edge_estimator, [1.1, 1.1])
    torch.manual_seed(1)
    mass = measure_prior_mass(posterior)
    torch.manual_seed(1)
    again = measure_prior_mass(posterior)
    reference = float(
        posterior.leakage_correction(posterior.default_x, num_rejection_samples=20_000)
    )
    assert 0.05 < mass.fraction < 0.8, mass
    assert abs(mass.fraction - reference) < 0.02, (mass.fraction, reference)
    assert mass.draws == PRIOR_MASS_DRAWS and mass.seconds_per_draw > 0
    assert again.fraction == mass.fraction  # seeded: the same count


def test_a_posterior_with_no_mass_in_the_prior_is_counted_on_the_most_draws(edge_estimator):
    posterior = _posterior(edge_estimator, [30.0, 30.0])
    mass = measure_prior_mass(posterior)
    assert mass.fraction == 0.0 and mass.draws == MAX_PRIOR_MASS_DRAWS
    assert math.isinf(mass.expected_seconds(10))
    with pytest.raises(LeakageError) as raised:
        check_sampling_time(mass, 10, 3600.0, _stop(mass, 10, 3600.0, 1, "snpe"))
    message = str(raised.value)
    assert "0 of 100000 network draws" in message and "would likely never finish" in message
    assert "Check xobs and the prior" in message  # round 1: trained on prior draws only


def _stop(mass, samples, limit, round_, method, what="round 1's posterior"):
    def message(expected):
        return leakage_stop(
            mass, samples, limit, round_=round_, method=method, what=what, expected=expected
        )

    return message


def test_a_sampling_predicted_above_the_limit_is_refused_with_the_remedies():
    mass = PriorMass(fraction=0.001, draws=10_000, seconds_per_draw=1e-4)
    assert mass.expected_seconds(1000) == pytest.approx(100.0)
    what = "round 4's proposal"
    check_sampling_time(mass, 1000, 101.0, _stop(mass, 1000, 101.0, 3, "snpe", what))
    check_sampling_time(mass, 1000, None, _stop(mass, 1000, None, 3, "snpe", what))
    with pytest.raises(LeakageError) as raised:
        check_sampling_time(mass, 1000, 99.0, _stop(mass, 1000, 99.0, 3, "snpe", what))
    message = str(raised.value)
    for part in (
        "round 3's posterior at xobs puts 0.1% of its mass inside the prior (10 of 10000",
        "drawing 1000 samples for round 4's proposal",
        "would take about 100 s, more than posterior.max_sampling_seconds=99",
        "--method tsnpe",
        "--max-sampling-seconds",
    ):
        assert part in message, message
    with pytest.raises(LeakageError, match="Use more simulations per round"):
        check_sampling_time(mass, 1000, 99.0, _stop(mass, 1000, 99.0, 3, "tsnpe", what))


def test_the_share_a_truncation_keeps_is_the_regions_prior_mass():
    """A disc of radius 0.1 in U[0, 1]^2 (the region of a narrow Gaussian above its
    log-density at that radius) holds pi * 0.01 of the prior."""
    prior = BoxUniform(torch.zeros(2), torch.ones(2))
    density = torch.distributions.MultivariateNormal(torch.full((2,), 0.5), 0.01 * torch.eye(2))
    threshold = float(density.log_prob(torch.tensor([0.6, 0.5])))
    torch.manual_seed(0)
    kept = measure_truncation(prior, density, threshold)
    assert abs(kept.fraction - math.pi * 0.01) < 0.006 and kept.draws == PRIOR_MASS_DRAWS
    message = truncation_stop(kept, 1000, 1e-6, round_=2, what="round 3's proposal", expected=9.0)
    assert message.startswith(
        f"the prior truncated to round 2's posterior (its highest-density region) keeps "
        f"{percent(kept.fraction)} of the prior's draws"
    )
    assert "a prior closer to it (narrower bounds)" in message and "--method snpe" in message


def test_a_slow_rejection_is_committed_in_more_batches_the_less_it_keeps():
    def mass(fraction):
        return PriorMass(fraction=fraction, draws=10_000, seconds_per_draw=1e-5)

    assert rejection_batches(None, 1) == 1 and rejection_batches(mass(0.5), 1) == 1
    assert rejection_batches(mass(0.1), 2) == 2  # fast enough: the sampler's own
    assert rejection_batches(mass(0.02), 1) == 5 and rejection_batches(mass(0.02), 8) == 8
    assert rejection_batches(mass(0.0003), 1) == MAX_REJECTION_BATCHES
    assert rejection_batches(mass(0.0), 1) == MAX_REJECTION_BATCHES


def test_sbis_low_acceptance_warning_is_left_out_where_the_run_says_it(edge_estimator, caplog):
    """sbi logs it at every sampling call: once per batch of a slow sampling."""
    posterior = _posterior(edge_estimator, [1.5, 1.5])  # about 0.8% inside
    with caplog.at_level(logging.WARNING):
        posterior.sample((100,), show_progress_bars=False)
    assert "proposal samples" in caplog.text  # sbi's own
    caplog.clear()
    with caplog.at_level(logging.WARNING), quiet_acceptance_warnings():
        posterior.sample((100,), show_progress_bars=False)
        logging.getLogger("sbi_rounds").warning("Only ours")
    assert "proposal samples" not in caplog.text and "Only ours" in caplog.text


def test_the_methods_that_sample_a_flow_by_rejection_measure_leakage():
    measured = sorted(m.name for m in METHODS.values() if m.measures_leakage)
    assert measured == ["snpe", "tsnpe"]
