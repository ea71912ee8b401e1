"""Rejection sampling, measured before it starts: a posterior leaking out of the prior, a
prior truncated to a small region.

sbi samples two distributions of this project by rejection, so ``n`` samples cost
``n / fraction`` draws of what is rejected from:

* SNPE's and TSNPE's posterior: the flow is trained on proposal draws and can put much of
  its mass at x_o outside the prior's support ("leakage", Greenberg et al. 2019; Deistler et
  al. 2022); draws outside are rejected. On sbibm's slcp with 10 x 100 simulations 0.03%
  fell inside and 10,000 samples took 484 s where 1 s is usual. The posterior stage counts
  the fraction inside first (:func:`measure_prior_mass`, about 0.1-0.5 s) and records it
  (the round table's ``in prior`` column, a warning below :data:`LEAKY_FRACTION`).
* A truncated prior (TSNPE, and TFMPE/TNPSE with ``threshold_density: kde``): prior draws
  outside the previous posterior's highest-density region are rejected; a posterior much
  narrower than the prior in many dimensions keeps almost none. The proposal counts the
  fraction kept (:func:`measure_truncation`) and stores it in its description.

A sampling predicted from that fraction to take longer than
``posterior.max_sampling_seconds`` is refused with the cause and the remedies
(:func:`check_sampling_time`); for the posterior, sbi's own time limit also stops one that
runs longer than predicted.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from sbi_rounds.errors import LeakageError
from sbi_rounds.runtime.progress import duration
from sbi_rounds.store.schema import PriorMass

__all__ = [
    "LEAKY_FRACTION",
    "MAX_PRIOR_MASS_DRAWS",
    "MAX_REJECTION_BATCHES",
    "MIN_INSIDE",
    "PRIOR_MASS_DRAWS",
    "check_sampling_time",
    "leakage_advice",
    "leakage_stop",
    "loading_warning",
    "measure_prior_mass",
    "measure_truncation",
    "percent",
    "quiet_acceptance_warnings",
    "rejection_batches",
    "truncation_stop",
]

#: Draws per batch when counting the fraction inside ...
PRIOR_MASS_DRAWS = 10_000
#: ... until this many fell inside ...
MIN_INSIDE = 10
#: ... or this many were drawn (none inside: the fraction is below 3e-5 at 95%).
MAX_PRIOR_MASS_DRAWS = 100_000
#: Below this fraction inside the prior, a round is flagged as leaking.
LEAKY_FRACTION = 0.1
#: The most commits one slow rejection sampling is split into.
MAX_REJECTION_BATCHES = 100


def _count_inside(
    sample: Callable[[int], Tensor], inside: Callable[[Tensor], Tensor], draws: int, max_draws: int
) -> PriorMass:
    """Draw ``draws`` at a time until :data:`MIN_INSIDE` fell inside or ``max_draws`` were
    drawn, so a tiny fraction is counted on enough draws to tell it from none."""
    total = count = 0
    start = time.perf_counter()
    while total < max_draws and (total == 0 or count < MIN_INSIDE):
        with torch.no_grad():
            count += int(inside(sample(draws)).sum())
        total += draws
    seconds = time.perf_counter() - start
    return PriorMass(fraction=count / total, draws=total, seconds_per_draw=seconds / total)


def measure_prior_mass(
    posterior: Any, draws: int = PRIOR_MASS_DRAWS, max_draws: int = MAX_PRIOR_MASS_DRAWS
) -> PriorMass:
    """The fraction of ``posterior``'s network draws at its default x inside its prior's
    support, and the seconds per draw (``draws`` at a time, at most ``max_draws``).

    Args:
        posterior: An sbi ``DirectPosterior`` with a default x (its public
            ``posterior_estimator``, ``prior`` and ``default_x``).
    """
    from sbi.utils import within_support

    estimator, x = posterior.posterior_estimator, posterior.default_x
    return _count_inside(
        lambda n: estimator.sample((n,), condition=x).reshape(n, -1),
        lambda theta: within_support(posterior.prior, theta),
        draws,
        max_draws,
    )


def measure_truncation(
    prior: Any,
    density: Any,
    threshold: float,
    draws: int = PRIOR_MASS_DRAWS,
    max_draws: int = MAX_PRIOR_MASS_DRAWS,
) -> PriorMass:
    """The fraction of ``prior``'s draws with ``density.log_prob > threshold`` (what the
    truncated prior keeps), and the seconds per prior draw tested."""
    return _count_inside(
        lambda n: prior.sample((n,)).reshape(n, -1),
        lambda theta: density.log_prob(theta) > threshold,
        draws,
        max_draws,
    )


def rejection_batches(mass: PriorMass | None, batches: int) -> int:
    """The commits a sampling is split into: ``batches``, or more for a rejection that keeps
    less than :data:`LEAKY_FRACTION` of its draws (``LEAKY_FRACTION / fraction``, at most
    :data:`MAX_REJECTION_BATCHES`), so an interrupted slow sampling keeps what it drew. From
    the fraction alone (seeded), so a resumed sampling is split alike."""
    if mass is None or mass.fraction >= LEAKY_FRACTION:
        return batches
    slow = math.ceil(LEAKY_FRACTION / max(mass.fraction, 1e-9))
    return max(batches, min(MAX_REJECTION_BATCHES, slow))


class _AcceptanceWarning(logging.Filter):
    """sbi's rejection sampler's "Only 0.02% proposal samples are accepted..." warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        return not (message.lstrip().startswith("Only") and "proposal samples" in message)


@contextmanager
def quiet_acceptance_warnings() -> Iterator[None]:
    """Leave out sbi's low-acceptance warning (its rejection sampler logs it on the root
    logger at every call, so once per batch): the run measured the fraction kept and says
    it once, in its own words."""
    root, quiet = logging.getLogger(), _AcceptanceWarning()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def percent(fraction: float) -> str:
    """``0.03%``, ``12%``, ``100%``: two significant digits below 10%; ``<0.01%`` below
    that."""
    if fraction >= 0.1 or fraction == 0.0:
        return f"{100 * fraction:.0f}%"
    if fraction < 1e-4:
        return "<0.01%"
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
    mass: PriorMass, samples: int, limit: float | None, message: Callable[[float], str]
) -> None:
    """Refuse to draw ``samples`` when that is predicted to take more than ``limit`` seconds.

    Args:
        mass: The measured fraction kept by the rejection (:class:`PriorMass`).
        samples: Samples to draw by rejection.
        limit: ``posterior.max_sampling_seconds`` (None: no limit).
        message: The refusal's message given the predicted seconds (:func:`leakage_stop`,
            :func:`truncation_stop`).

    Raises:
        LeakageError: Predicted above ``limit``; the message says why and what to do.
    """
    expected = mass.expected_seconds(samples)
    if limit is None or expected <= limit:
        return
    raise LeakageError(message(expected))


def _cost(mass: PriorMass, samples: int, what: str, limit: float, expected: float | None) -> str:
    if expected is None:
        cost = "took longer than"
    elif mass.inside == 0:
        cost = "would likely never finish within"
    else:
        cost = f"would take about {expected:.0f} s, more than"
    return (
        f"drawing {samples} sample{'s' if samples != 1 else ''} for {what} by rejecting the "
        f"rest {cost} "
        f"posterior.max_sampling_seconds={limit:g}"
    )


_RAISE = (
    "Or raise posterior.max_sampling_seconds (--max-sampling-seconds) to wait that long; "
    "every finished stage is kept."
)


def _leaks(mass: PriorMass, round_: int) -> str:
    return (
        f"round {round_}'s posterior at xobs puts {percent(mass.fraction)} of its mass inside "
        f"the prior ({mass.inside} of {mass.draws} network draws)"
    )


def leakage_stop(
    mass: PriorMass,
    samples: int,
    limit: float,
    *,
    round_: int,
    method: str,
    what: str,
    expected: float | None = None,
) -> str:
    """Why sampling round ``round_``'s leaking posterior was stopped, and what to do."""
    return (
        f"{_leaks(mass, round_)}: "
        f"{_cost(mass, samples, what, limit, expected)}. Its density leaks out of the prior. "
        f"{leakage_advice(method, round_)} {_RAISE}"
    )


def truncation_stop(
    mass: PriorMass,
    samples: int,
    limit: float,
    *,
    round_: int,
    what: str,
    expected: float | None = None,
) -> str:
    """Why sampling the prior truncated to round ``round_``'s posterior was stopped."""
    return (
        f"the prior truncated to round {round_}'s posterior (its highest-density region) "
        f"keeps {percent(mass.fraction)} of the prior's draws ({mass.inside} of {mass.draws}): "
        f"{_cost(mass, samples, what, limit, expected)}. The posterior fills a tiny part "
        "of the prior: a prior closer to it (narrower bounds) makes the truncation cheap, "
        f"or use --method snpe (its proposals are the posterior itself). {_RAISE}"
    )


def loading_warning(
    mass: PriorMass, *, round_: int, samples: int, earlier: tuple[int, PriorMass] | None
) -> str:
    """What a user loading round ``round_``'s leaking posterior is told: how slow ``samples``
    samples are, how to bound them, and the last earlier round that does not leak
    (``earlier``: its round and record, None if there is none)."""
    if mass.inside == 0:
        cost = "may never finish"
    else:
        cost = f"takes about {duration(mass.expected_seconds(samples))}"
    text = (
        f"{_leaks(mass, round_)}: sbi samples it by rejecting the rest, so "
        f"sample(({samples},)) {cost}. Bound it with "
        "sample(..., max_sampling_time=SECONDS, return_partial_on_timeout=True)"
    )
    if earlier is not None:
        text += f", or load round={earlier[0]} ({percent(earlier[1].fraction)} inside)"
    return text + "."
