"""Leakage: a posterior estimate's mass outside the prior, measured before it is sampled.

SNPE's flow is trained on proposal draws and can put much of its mass at x_o outside the
prior's support ("leakage", Greenberg et al. 2019; Deistler et al. 2022). sbi samples such
a posterior by rejecting what falls outside, so ``n`` samples cost ``n / fraction`` network
draws: on sbibm's slcp with 10 x 100 simulations, 0.03% fell inside and 10,000 samples took
484 s where 1 s is usual. The posterior stage measures the fraction inside on a fixed number
of draws first (:func:`measure_prior_mass`, about 0.1-0.5 s), records it (the round table's
``in prior`` column, and a warning below :data:`LEAKY_FRACTION`), and refuses a sampling
predicted to take longer than ``posterior.max_sampling_seconds``
(:func:`check_sampling_time`); sbi's own time limit stops one that runs longer than
predicted.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from sbi_rounds.errors import LeakageError
from sbi_rounds.store.schema import PriorMass

__all__ = [
    "LEAKY_FRACTION",
    "MAX_PRIOR_MASS_DRAWS",
    "MIN_INSIDE",
    "PRIOR_MASS_DRAWS",
    "check_sampling_time",
    "leakage_advice",
    "leakage_stop",
    "measure_prior_mass",
    "percent",
]

#: Network draws per batch when counting the fraction inside the prior ...
PRIOR_MASS_DRAWS = 10_000
#: ... until this many fell inside ...
MIN_INSIDE = 10
#: ... or this many were drawn (none inside: the fraction is below 3e-5 at 95%).
MAX_PRIOR_MASS_DRAWS = 100_000
#: Below this fraction inside the prior, a round is flagged as leaking.
LEAKY_FRACTION = 0.1


def measure_prior_mass(
    posterior: Any, draws: int = PRIOR_MASS_DRAWS, max_draws: int = MAX_PRIOR_MASS_DRAWS
) -> PriorMass:
    """The fraction of ``posterior``'s network draws at its default x inside its prior's
    support, and the seconds per draw.

    Draws ``draws`` at a time until :data:`MIN_INSIDE` fell inside or ``max_draws`` were
    drawn, so a tiny fraction is counted on enough draws to tell it from none.

    Args:
        posterior: An sbi ``DirectPosterior`` with a default x (its public
            ``posterior_estimator``, ``prior`` and ``default_x``).
        draws: Network draws per batch.
        max_draws: Network draws at most.
    """
    from sbi.utils import within_support

    estimator = posterior.posterior_estimator
    total = inside = 0
    start = time.perf_counter()
    while total < max_draws and (total == 0 or inside < MIN_INSIDE):
        with torch.no_grad():
            theta = estimator.sample((draws,), condition=posterior.default_x)
        inside += int(within_support(posterior.prior, theta.reshape(draws, -1)).sum())
        total += draws
    seconds = time.perf_counter() - start
    return PriorMass(fraction=inside / total, draws=total, seconds_per_draw=seconds / total)


def percent(fraction: float) -> str:
    """``0.03%``, ``12%``, ``100%``: two significant digits below 10%."""
    if fraction >= 0.1 or fraction == 0.0:
        return f"{100 * fraction:.0f}%"
    return f"{100 * fraction:.2g}%"


def leakage_advice(method: str, round_: int) -> str:
    """What to do about round ``round_``'s leaking posterior, a sentence (``method``: the
    run's method)."""
    if round_ == 1:  # trained on prior draws only: xobs is where they rarely reach
        return (
            "Check xobs and the prior: a round-1 posterior (trained on prior draws) leaks "
            "when xobs lies where the prior's simulations rarely reach."
        )
    if method == "snpe":
        return (
            "Use --method tsnpe (its truncated proposals stay inside the prior), or more "
            "simulations per round."
        )
    return "Use more simulations per round."


def check_sampling_time(
    mass: PriorMass, samples: int, limit: float | None, *, round_: int, method: str, what: str
) -> None:
    """Refuse to draw ``samples`` when that is predicted to take more than ``limit`` seconds.

    Args:
        mass: The round's measured :class:`PriorMass`.
        samples: Samples to draw by rejection.
        limit: ``posterior.max_sampling_seconds`` (None: no limit).
        round_: The round whose posterior is sampled.
        method: The run's method (for the advice).
        what: What the samples are, e.g. ``"round 3's proposal"``.

    Raises:
        LeakageError: Predicted above ``limit``; the message says why and what to do.
    """
    expected = mass.expected_seconds(samples)
    if limit is None or expected <= limit:
        return
    raise LeakageError(leakage_stop(mass, samples, limit, round_, method, what, expected))


def leakage_stop(
    mass: PriorMass,
    samples: int,
    limit: float,
    round_: int,
    method: str,
    what: str,
    expected: float | None = None,
) -> str:
    """The message of a sampling stopped by ``posterior.max_sampling_seconds``."""
    inside = round(mass.fraction * mass.draws)
    if expected is None:
        cost = "took longer than"
    elif inside == 0:
        cost = "would likely never finish within"
    else:
        cost = f"would take about {expected:.0f} s, more than"
    return (
        f"round {round_}'s posterior at xobs puts {percent(mass.fraction)} of its mass inside "
        f"the prior ({inside} of {mass.draws} network draws): drawing {samples} samples for "
        f"{what} by rejecting the rest {cost} posterior.max_sampling_seconds={limit:g}. "
        f"Its density leaks out of the prior. {leakage_advice(method, round_)} Or raise "
        "posterior.max_sampling_seconds (--max-sampling-seconds) to wait that long; every "
        "finished stage is kept."
    )
