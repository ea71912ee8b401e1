"""Drawing parameters: the proposal's at a round's start, the posterior's at its end."""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from sbi_rounds.errors import LeakageError
from sbi_rounds.lifecycle.run import Run, posterior_for_round
from sbi_rounds.lifecycle.stage import stage
from sbi_rounds.methods.base import Proposal
from sbi_rounds.methods.leakage import (
    check_sampling_time,
    leakage_stop,
    measure_prior_mass,
    percent,
    quiet_acceptance_warnings,
    rejection_batches,
    truncation_stop,
)
from sbi_rounds.seeding import derive_seed, seeded
from sbi_rounds.simulation import measure_seconds_per_simulation, plan_round
from sbi_rounds.simulation.imported import plan_imported
from sbi_rounds.simulation.ledger import measured_speed
from sbi_rounds.store import PriorMass, Stage

__all__ = [
    "SLOW_SAMPLING",
    "ProposalSampled",
    "PosteriorSampled",
    "build_posterior",
    "draw",
    "sample_proposal",
]


@dataclass(frozen=True, kw_only=True)
class ProposalSampled:
    """What the sample stage did: drew the round's ``simulations`` parameters from the
    proposal the run file describes as ``proposal`` (``Proposal.description``)."""

    proposal: dict[str, Any]
    simulations: int


@dataclass(frozen=True, kw_only=True)
class PosteriorSampled:
    """What the posterior stage did: committed ``samples`` posterior samples at xobs."""

    samples: int


log = logging.getLogger(__name__)

#: The message of a sampling refused or stopped: ``(mass, samples, limit, expected=...)``.
Stop = Callable[..., str]

#: A posterior sampling predicted to take longer (seconds) is announced before it starts.
SLOW_SAMPLING = 10.0


def draw(distribution: Any, n: int, max_seconds: float | None = None) -> torch.Tensor:
    """``distribution.sample((n,))`` as ``(n, D)`` float32, quietly where the sampler takes
    that option, and stopped by sbi after ``max_seconds`` where it takes that one
    (``max_sampling_time``: rejection sampling).

    Raises:
        TimeoutError: The sampler gave up at ``max_seconds``.
    """
    try:
        parameters = inspect.signature(distribution.sample).parameters
    except (TypeError, ValueError):
        parameters = {}
    options: dict[str, Any] = {}
    if "show_progress_bars" in parameters:
        options["show_progress_bars"] = False
    if "print_rejected_frac" in parameters:  # sbi's RestrictedPrior prints it otherwise
        options["print_rejected_frac"] = False
    if max_seconds is not None and "max_sampling_time" in parameters:
        options["max_sampling_time"] = max_seconds
    start = time.perf_counter()
    try:
        out = distribution.sample((n,), **options)
    except RuntimeError as error:
        if "max_sampling_time" in options and time.perf_counter() - start >= max_seconds:
            raise TimeoutError(f"sampling stopped after {max_seconds:g} s") from error
        raise
    return out.reshape(n, -1).float()


def _check_time(run: Run, mass: PriorMass | None, n: int, what: str, stop: Stop) -> None:
    """Refuse (``stop``'s message) to draw the ``n`` samples still to come from a
    distribution sampled by rejection that keeps ``mass.fraction`` of its draws when that
    is predicted to take longer than ``posterior.max_sampling_seconds``; announce it when
    it will be slow."""
    if mass is None or n <= 0:
        return
    limit = run.config.posterior.max_sampling_seconds
    check_sampling_time(mass, n, limit, lambda expected: stop(mass, n, limit, expected=expected))
    expected = mass.expected_seconds(n)
    if expected > SLOW_SAMPLING:
        log.warning(
            "drawing %d samples for %s will take about %.0f s: the rejection keeps %s of the "
            "draws",
            n, what, expected, percent(mass.fraction),
        )  # fmt: skip


def _draw_limited(
    run: Run, distribution: Any, n: int, mass: PriorMass | None, stop: Stop
) -> torch.Tensor:
    """Draw ``n``; a sampling by rejection (``mass`` measured) is stopped by sbi at
    ``posterior.max_sampling_seconds``, with ``stop``'s message."""
    if mass is None:
        return draw(distribution, n)
    limit = run.config.posterior.max_sampling_seconds
    try:
        with quiet_acceptance_warnings():
            return draw(distribution, n, limit)
    except TimeoutError:
        assert limit is not None
        raise LeakageError(stop(mass, n, limit)) from None


def _proposal(run: Run, round_: int) -> Proposal:
    """The round's proposal: its distribution, stored description and acceptance."""
    if round_ == 1:
        return Proposal(distribution=run.prior, description={"kind": "prior"})
    posterior = posterior_for_round(run, round_ - 1)
    return run.method.proposal(run.config.method_settings, posterior, run.prior, round_)


def _plan(run: Run, round_: int, n: int, description: dict[str, Any]) -> None:
    """Allocate the round in the run file, with its chunk size (``simulation.plan_round``;
    ``measure`` in round 1 times the simulator here on a few prior draws)."""
    cfg = run.config

    def time_probe() -> float:
        probe_seed = derive_seed(cfg.seed, round_, "probe")
        with seeded(probe_seed):
            probe = draw(run.prior, 64).numpy()
        return measure_seconds_per_simulation(
            cfg.simulator,
            probe,
            x_dim=len(cfg.xobs),
            seed=probe_seed,
            budget=min(2.0, cfg.cluster.chunk_seconds),
        )

    plan_round(
        run.store,
        round_,
        cluster=cfg.cluster,
        seconds_per_simulation=measured_speed(run.store, round_, cfg.cluster, time_probe),
        num_simulations=n,
        theta_dim=run.theta_dim,
        x_dim=len(cfg.xobs),
        num_posterior_samples=cfg.posterior_samples_for_round(round_),
        proposal=description,
        x_dtype=cfg.x_dtype,
    )


def _batches(run: Run, mass: PriorMass | None) -> int:
    """The commits a sampling is split into: the sampler's own (1 for direct sampling,
    ``posterior.batches`` for the others), more for a slow rejection
    (:func:`~sbi_rounds.methods.leakage.rejection_batches`)."""
    cfg = run.config
    return rejection_batches(
        mass, 1 if cfg.posterior_sampler == "direct" else cfg.posterior.batches
    )


def _rejection(
    run: Run, round_: int, proposal: Proposal, what: str
) -> tuple[PriorMass | None, Stop]:
    """What a round's proposal keeps of the draws it rejects from, and the message of a
    sampling refused for it: the previous posterior's fraction inside the prior, or the
    truncated prior's share of the prior (None: not measured)."""
    if proposal.description["kind"] == "posterior":
        stop = partial(leakage_stop, round_=round_ - 1, method=run.config.method, what=what)
        return run.store.prior_mass(round_ - 1), stop
    return proposal.acceptance, partial(truncation_stop, round_=round_ - 1, what=what)


@stage("sample", Stage.SAMPLED)
def sample_proposal(run: Run, round_: int) -> ProposalSampled:
    """Draw the round's parameters from its proposal and commit them in batches.

    Round 1 draws from the prior (or takes the pairs of ``start_from``: see
    :mod:`sbi_rounds.simulation.imported`); later rounds from the method's proposal built from the
    previous round's posterior at xobs. Where the proposal is that posterior (SNPE, SNLE,
    SNRE), the posterior samples the previous round stored are used first and only the rest
    is drawn. Batches are committed as they come, so an interrupted (MCMC) sampling resumes
    from the last committed batch.
    """
    store, cfg = run.store, run.config
    if round_ > 1 and store.stage(round_ - 1) != Stage.DONE:
        raise RuntimeError(f"round {round_ - 1} is not finished; finish it before round {round_}")
    if round_ == 1 and cfg.start_from is not None:  # simulations you have: nothing to draw
        return plan_imported(run, round_)
    with seeded(derive_seed(cfg.seed, round_, "sample", 0)):
        proposal = _proposal(run, round_)
    distribution, description = proposal.distribution, proposal.description
    if store.stage(round_) is None:
        _plan(run, round_, cfg.simulations_for_round(round_), description)
    info = store.round_info(round_)
    n = info.num_simulations
    # The previous round's posterior samples at xobs are draws from this proposal already:
    # take them first (they cost an MCMC run for SNLE/SNRE) and draw only the rest.
    reuse = 0
    if description["kind"] == "posterior":
        previous = store.read_samples(round_ - 1)
        reuse = min(len(previous), n)
        if info.theta_done < reuse:
            store.write_theta(round_, 0, previous[:reuse])
    what = f"round {round_}'s proposal"
    mass, stop = _rejection(run, round_, proposal, what)
    batches = 1 if round_ == 1 else _batches(run, mass)
    per_batch = max(1, math.ceil((n - reuse) / batches))
    _check_time(run, mass, n - max(reuse, info.theta_done), what, stop)
    for b in range(max(0, info.theta_done - reuse) // per_batch, batches):
        start = reuse + b * per_batch
        count = min(per_batch, n - start)
        if count <= 0:
            break
        with seeded(derive_seed(cfg.seed, round_, "sample", b + 1)):
            theta = _draw_limited(run, distribution, count, mass, stop)
        store.write_theta(round_, start, theta.numpy())
    return ProposalSampled(proposal=description, simulations=n)


@stage("posterior", Stage.POSTERIOR)
def build_posterior(run: Run, round_: int) -> PosteriorSampled:
    """Build the round's posterior at xobs and commit its samples batch by batch.

    Methods that measure leakage first count the share of the network's draws inside the
    prior and record it; a sampling that keeps less than ``LEAKY_FRACTION`` is split into
    more batches, and one predicted to exceed ``posterior.max_sampling_seconds`` refused.
    """
    store, cfg = run.store, run.config
    posterior = posterior_for_round(run, round_)
    mass = None
    if run.method.measures_leakage:
        with seeded(derive_seed(cfg.seed, round_, "leakage")):
            mass = measure_prior_mass(posterior)
        store.write_prior_mass(round_, mass)
    what = f"round {round_}'s posterior"
    stop = partial(leakage_stop, round_=round_, method=cfg.method, what=what)
    info = store.round_info(round_)
    s = info.num_posterior_samples
    batches = _batches(run, mass)
    per_batch = math.ceil(s / batches)
    _check_time(run, mass, s - info.samples_done, what, stop)
    for b in range(info.samples_done // per_batch, batches):
        start = b * per_batch
        count = min(per_batch, s - start)
        if count <= 0:
            break
        with seeded(derive_seed(cfg.seed, round_, "posterior", b)):
            samples = _draw_limited(run, posterior, count, mass, stop)
        store.write_samples(round_, start, samples.numpy())
    return PosteriorSampled(samples=s)
