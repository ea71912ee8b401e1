"""Drawing parameters: the proposal's at a round's start, the posterior's at its end."""

from __future__ import annotations

import inspect
import logging
import math
import time
from typing import Any

import torch

from sbi_rounds.errors import LeakageError
from sbi_rounds.methods.leakage import (
    check_sampling_time,
    leakage_stop,
    measure_prior_mass,
    percent,
)
from sbi_rounds.run import Run, posterior_for_round
from sbi_rounds.seeding import derive_seed, seeded
from sbi_rounds.simulation import choose_chunk_size, measure_seconds_per_simulation
from sbi_rounds.stage import stage
from sbi_rounds.store import PriorMass, Stage

__all__ = ["SLOW_SAMPLING", "build_posterior", "draw", "sample_proposal"]

log = logging.getLogger(__name__)

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


def _draw_leaky(
    run: Run, round_: int, distribution: Any, n: int, mass: PriorMass | None, what: str
) -> torch.Tensor:
    """Draw ``n`` from round ``round_``'s posterior, refused or stopped by
    ``posterior.max_sampling_seconds`` when its measured leakage makes that too slow."""
    if mass is None:
        return draw(distribution, n)
    limit, method = run.config.posterior.max_sampling_seconds, run.config.method
    check_sampling_time(mass, n, limit, round_=round_, method=method, what=what)
    expected = mass.expected_seconds(n)
    if expected > SLOW_SAMPLING:
        log.warning(
            "round %d: drawing %d samples for %s will take about %.0f s: only %s of the "
            "posterior's network draws fall inside the prior",
            round_, n, what, expected, percent(mass.fraction),
        )  # fmt: skip
    try:
        return draw(distribution, n, limit)
    except TimeoutError:
        assert limit is not None
        raise LeakageError(leakage_stop(mass, n, limit, round_, method, what)) from None


def _proposal(run: Run, round_: int) -> tuple[Any, dict[str, Any]]:
    """The round's proposal distribution and its stored description."""
    if round_ == 1:
        return run.prior, {"kind": "prior"}
    posterior = posterior_for_round(run, round_ - 1)
    proposal = run.method.proposal(run.config.method_settings, posterior, run.prior, round_)
    return proposal.distribution, proposal.description


def _plan(run: Run, round_: int, n: int, description: dict[str, Any]) -> None:
    """Allocate the round in the run file, with its chunk size (timed on a probe if asked)."""
    cfg, store = run.config, run.store
    measured = None
    if cfg.cluster.chunk_size == "measure":
        if round_ > 1:
            measured = store.seconds_per_simulation(round_ - 1)
        if measured is None:  # round 1: time the simulator on a few prior draws, here
            probe_seed = derive_seed(cfg.seed, round_, "probe")
            with seeded(probe_seed):
                probe = draw(run.prior, 64).numpy()
            measured = measure_seconds_per_simulation(
                cfg.simulator,
                probe,
                x_dim=len(cfg.xobs),
                seed=probe_seed,
                budget=min(2.0, cfg.cluster.chunk_seconds),
            )
    store.plan_round(
        round_,
        num_simulations=n,
        theta_dim=run.theta_dim,
        x_dim=len(cfg.xobs),
        chunk_size=choose_chunk_size(cfg.cluster, n, measured),
        num_posterior_samples=cfg.posterior.num_samples,
        proposal=description,
        x_dtype=cfg.x_dtype,
    )


@stage("sample", Stage.SAMPLED)
def sample_proposal(run: Run, round_: int) -> dict[str, Any]:
    """Draw the round's parameters from its proposal and commit them in batches.

    Round 1 draws from the prior; later rounds from the method's proposal built from the
    previous round's posterior at xobs. Where the proposal is that posterior (SNPE, SNLE,
    SNRE), the posterior samples the previous round stored are used first and only the rest
    is drawn. Batches are committed as they come, so an interrupted (MCMC) sampling resumes
    from the last committed batch.
    """
    store, cfg = run.store, run.config
    if round_ > 1 and store.stage(round_ - 1) != Stage.DONE:
        raise RuntimeError(f"round {round_ - 1} is not finished; finish it before round {round_}")
    with seeded(derive_seed(cfg.seed, round_, "sample", 0)):
        distribution, description = _proposal(run, round_)
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
    mass = store.prior_mass(round_ - 1) if description["kind"] == "posterior" else None
    what = f"round {round_}'s proposal"
    batches = 1 if cfg.posterior_sampler == "direct" or round_ == 1 else cfg.posterior.batches
    per_batch = max(1, math.ceil((n - reuse) / batches))
    for b in range(max(0, info.theta_done - reuse) // per_batch, batches):
        start = reuse + b * per_batch
        count = min(per_batch, n - start)
        if count <= 0:
            break
        with seeded(derive_seed(cfg.seed, round_, "sample", b + 1)):
            theta = _draw_leaky(run, round_ - 1, distribution, count, mass, what)
        store.write_theta(round_, start, theta.numpy())
    return {"proposal": description, "simulations": n}


@stage("posterior", Stage.POSTERIOR)
def build_posterior(run: Run, round_: int) -> dict[str, Any]:
    """Build the round's posterior at xobs and commit its samples batch by batch."""
    store, cfg = run.store, run.config
    posterior = posterior_for_round(run, round_)
    mass = None
    if run.method.measures_leakage:
        with seeded(derive_seed(cfg.seed, round_, "leakage")):
            mass = measure_prior_mass(posterior)
        store.write_prior_mass(round_, mass)
    what = f"round {round_}'s posterior"
    info = store.round_info(round_)
    s = info.num_posterior_samples
    batches = 1 if cfg.posterior_sampler == "direct" else cfg.posterior.batches
    per_batch = math.ceil(s / batches)
    for b in range(info.samples_done // per_batch, batches):
        start = b * per_batch
        count = min(per_batch, s - start)
        if count <= 0:
            break
        with seeded(derive_seed(cfg.seed, round_, "posterior", b)):
            samples = _draw_leaky(run, round_, posterior, count, mass, what)
        store.write_samples(round_, start, samples.numpy())
    return {"samples": s}
