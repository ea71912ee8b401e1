"""The per-round check stage: summary with MAP, predictive check, movement, C2ST, calibration.

``diagnose(run, r, client)`` runs after a round's ``checkpoint`` and commits every result
in one write to the run file (``RunStore.write_diagnostics``): the round's
``RoundDiagnostics``, and round 1's ``Calibration``. Like every stage it skips what is
committed; parts never computed (a reference given later, a check switched on) are filled
in when it runs again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sbi_rounds.config.io import load_array
from sbi_rounds.diagnostics.calibration import calibrate
from sbi_rounds.diagnostics.checks import (
    c2st_sbibm,
    movement,
    posterior_statistics,
    predictive_check,
)
from sbi_rounds.diagnostics.plots import save_calibration_plots, save_predictive_plot
from sbi_rounds.diagnostics.simulations import CALIBRATION_SET, CheckSimulations
from sbi_rounds.errors import RunInterrupted
from sbi_rounds.lifecycle.run import Run, parameter_names, posterior_for_round
from sbi_rounds.lifecycle.stage import StageResult
from sbi_rounds.seeding import derive_seed, seeded
from sbi_rounds.store import Calibration, RoundDiagnostics, Stage

__all__ = [
    "CALIBRATION_NOTE",
    "Diagnosed",
    "check_inputs",
    "checks_due",
    "diagnose",
    "load_reference",
    "statistic_names",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Diagnosed:
    """What the checks computed: ``parts`` (``posterior``, ``map``, ``predictive``,
    ``movement``, ``c2st``, ``calibration``), in that order."""

    parts: tuple[str, ...]


#: Why calibration checks round 1's estimator only.
CALIBRATION_NOTE = (
    "Calibration checks round 1's estimator, the only one trained on prior simulations "
    "alone: it is amortized (valid for any x), so its calibration over prior draws is "
    "meaningful. Later rounds are trained for x_o on proposals focused on it, and SBC over "
    "the prior would mix in regions they were never trained for. For SNPE and TSNPE the "
    "round-1 network is the posterior (direct sampling); for SNLE and SNRE it is a "
    "likelihood or ratio whose posteriors are sampled per test simulation with the "
    "configured sampler (batched MCMC), so the check covers the sampler too and costs one "
    "posterior sampling per test simulation."
)


def statistic_names(run: Run) -> list[str]:
    """Names of the summary statistics: ``x_names``, or ``x_1 .. x_K``."""
    return run.config.x_names or [f"x_{k + 1}" for k in range(len(run.config.xobs))]


def load_reference(run: Run) -> np.ndarray | None:
    """The reference posterior samples ``(S, D)`` of ``diagnostics.reference``, or None.

    Raises:
        ValueError: The file cannot be read or does not hold ``(S, D)`` finite samples.
    """
    spec = run.config.diagnostics.reference
    if spec is None:
        return None
    try:
        samples = load_array(spec)
    except ValueError as e:
        raise ValueError(f"diagnostics.reference: {e}") from None
    if samples.ndim != 2 or samples.shape[1] != run.theta_dim or len(samples) < 10:
        raise ValueError(
            f"diagnostics.reference {spec!r} must hold at least 10 posterior samples of the "
            f"{run.theta_dim} parameters, shape (S, {run.theta_dim}); it has shape "
            f"{samples.shape}"
        )
    if not np.isfinite(samples).all():
        raise ValueError(f"diagnostics.reference {spec!r} holds NaN or infinite values")
    return samples


def check_inputs(run: Run) -> None:
    """Check the checks' inputs before any work: the reference file and the true parameters.

    Raises:
        ValueError: A message naming the setting and what is wrong.
    """
    load_reference(run)
    truth = run.config.diagnostics.true_parameters
    if truth is not None and len(truth) != run.theta_dim:
        raise ValueError(
            f"diagnostics.true_parameters has {len(truth)} values but the prior has "
            f"{run.theta_dim} parameters"
        )


def _wanted(run: Run, round_: int, stored: RoundDiagnostics) -> list[str]:
    d = run.config.diagnostics
    parts = []
    summary = stored.posterior or {}
    has_truth = all(s.truth is not None for s in summary.values()) if summary else False
    if not summary or has_truth != (d.true_parameters is not None):
        parts.append("posterior")
    if run.config.map_iterations > 0 and stored.map is None:
        parts.append("map")
    if d.predictive_simulations > 0 and stored.predictive is None:
        parts.append("predictive")
    if round_ > 1 and stored.movement is None:
        parts.append("movement")
    if d.reference is not None and stored.c2st is None:
        parts.append("c2st")
    return parts


def _calibration_due(run: Run, round_: int) -> bool:
    """Round 1's calibration is due when never computed, or computed without the classifier
    tests that ``diagnostics.calibration_classifiers`` now asks for."""
    if round_ != 1 or run.config.calibration_simulations <= 0:
        return False
    stored = run.store.calibration(1)
    if stored is None:
        return True
    return run.config.diagnostics.calibration_classifiers and not stored.classified


def checks_due(run: Run, round_: int) -> list[str]:
    """The checks :func:`diagnose` would compute for a finished round (empty: none)."""
    stored = run.store.diagnostics(round_) or RoundDiagnostics()
    due = _wanted(run, round_, stored)
    return due + (["calibration"] if _calibration_due(run, round_) else [])


def _interrupted(should_stop: Callable[[], bool] | None, what: str, round_: int) -> None:
    if should_stop is not None and should_stop():
        raise RunInterrupted(f"stopped while {what} of round {round_}")


#: Gradient steps of one stretch of the MAP's ascent (see :func:`_map`).
MAP_STEPS_PER_STRETCH = 25
#: A stretch that raises the log density by less than this (nats) ends the ascent: a point
#: whose log density is 0.001 below the mode's lies within 0.05 sd of it (Gaussian).
MAP_TOLERANCE = 1e-3


def _map(run: Run, round_: int, samples: np.ndarray) -> list[float]:
    """sbi's ``posterior.map()``, started from the stored samples (no new sampling).

    The ascent runs in stretches of :data:`MAP_STEPS_PER_STRETCH` steps: the first from
    the best 10 of the first 1,000 samples, each next one from the best point so far. It
    ends after ``diagnostics.map_iterations`` steps or once a stretch raises the log
    density by less than :data:`MAP_TOLERANCE`, so a posterior whose best sample is already
    at its mode (a few dimensions) costs 50 steps instead of all of them.
    """
    posterior = posterior_for_round(run, round_)
    budget = run.config.map_iterations
    estimate = torch.from_numpy(np.ascontiguousarray(samples[:1000], dtype=np.float32))
    best = -math.inf
    with seeded(derive_seed(run.config.seed, round_, "predictive", 0)):
        for stretch, start in enumerate(range(0, budget, MAP_STEPS_PER_STRETCH)):
            steps = min(MAP_STEPS_PER_STRETCH, budget - start)
            candidate = posterior.map(
                init_method=estimate,
                num_iter=steps,
                num_to_optimize=min(10, len(estimate)),
                show_progress_bars=False,
                force_update=True,
            )
            value = float(posterior.potential(candidate))
            gain = value - best
            if stretch == 0 or gain > 0:
                estimate, best = candidate, value
            if stretch > 0 and not gain >= MAP_TOLERANCE:  # (not >=: a NaN gain ends it too)
                break
    return [float(v) for v in estimate.reshape(-1)]


def _predictive(
    run: Run,
    round_: int,
    samples: np.ndarray,
    client: Any,
    should_stop: Callable[[], bool] | None,
    progress: Callable[[int, int, float], None] | None,
) -> dict[str, Any]:
    cfg, d = run.config, run.config.diagnostics
    n = min(d.predictive_simulations, len(samples))
    if n < d.predictive_simulations:
        log.info(
            "round %d: the predictive check simulates all %d stored posterior samples "
            "(diagnostics.predictive_simulations=%d > the round's posterior samples)",
            round_,
            n,
            d.predictive_simulations,
        )
    sims = CheckSimulations(run.layout, cfg, run.store.fingerprint()).simulate(
        round_,
        samples[:n],
        x_dim=len(cfg.xobs),
        run_seed=derive_seed(cfg.seed, round_, "predictive"),
        client=client,
        description={"kind": "posterior_predictive", "round": round_},
        seconds_per_simulation=run.store.seconds_per_simulation(round_),
        should_stop=should_stop,
        progress=progress,
    )
    if sims is None:
        raise RunInterrupted(f"stopped while simulating the predictive check of round {round_}")
    xobs = np.asarray(cfg.xobs, dtype=np.float64)
    check = predictive_check(sims.x, xobs, statistic_names(run), alpha=d.predictive_alpha)
    figure = save_predictive_plot(
        sims.x,
        xobs,
        check,
        run.layout.figure(f"round_{round_:03d}_predictive.png"),
        title=f"Posterior predictive check, round {round_}",
    )
    check["figure"] = run.layout.relative(figure)
    check["simulated_now"] = sims.simulated_now
    return check


def _calibration(run: Run, client: Any, should_stop: Callable[[], bool] | None) -> dict[str, Any]:
    cfg, d = run.config, run.config.diagnostics
    n = cfg.calibration_simulations
    with seeded(derive_seed(cfg.seed, 1, "calibration", 0)):
        theta = run.prior.sample((n,)).reshape(n, -1).float().numpy()
    sims = CheckSimulations(run.layout, cfg, run.store.fingerprint()).simulate(
        CALIBRATION_SET,
        theta,
        x_dim=len(cfg.xobs),
        run_seed=derive_seed(cfg.seed, 1, "calibration", 1),
        client=client,
        description={"kind": "prior", "purpose": "calibration of round 1"},
        seconds_per_simulation=run.store.seconds_per_simulation(1),
        should_stop=should_stop,
    )
    if sims is None:
        raise RunInterrupted("stopped while simulating the calibration tests of round 1")
    names = parameter_names(run)
    result, ranks = calibrate(
        posterior_for_round(run, 1),
        sims.theta,
        sims.x,
        names,
        num_posterior_samples=d.calibration_posterior_samples,
        seed=derive_seed(cfg.seed, 1, "calibration", 2),
        classifiers=d.calibration_classifiers,
    )
    layout = run.layout
    figures = save_calibration_plots(ranks, d.calibration_posterior_samples, names, layout.figures)
    result["figures"] = {key: layout.relative(path) for key, path in figures.items()}
    result["estimator"] = f"round 1 ({cfg.method}), amortized"
    result["note"] = CALIBRATION_NOTE
    for w in result["warnings"]:
        log.warning("calibration: %s", w)
    return result


def _compute(
    run: Run,
    round_: int,
    stored: RoundDiagnostics,
    missing: list[str],
    calibration_due: bool,
    client: Any,
    should_stop: Callable[[], bool] | None,
    progress: Callable[[int, int, float], None] | None,
) -> tuple[RoundDiagnostics, Calibration | None]:
    """Compute the ``missing`` checks, with their seconds, on top of the ``stored`` ones.

    Returns:
        ``(diagnostics, calibration)``: the round's checks, and round 1's calibration
        when it was due (else None).
    """
    store = run.store
    d = run.config.diagnostics
    seconds = stored.seconds.model_dump()
    parts: dict[str, Any] = {}
    samples = store.read_samples(round_)
    names = parameter_names(run)

    def timed(part: str, compute: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = compute()
        seconds[part] = time.perf_counter() - start
        _interrupted(should_stop, f"computing the {part} check", round_)
        return value

    if "map" in missing:
        parts["map"] = timed("map", lambda: _map(run, round_, samples))
    summary = posterior_statistics(
        samples,
        names,
        map_estimate=parts.get("map", stored.map),
        true_parameters=d.true_parameters,
    )
    parts["posterior"] = summary
    if "predictive" in missing:
        parts["predictive"] = timed(
            "predictive",
            lambda: _predictive(run, round_, samples, client, should_stop, progress),
        )
    if "movement" in missing:
        parts["movement"] = movement(_previous_summary(run, round_ - 1), summary)
    if "c2st" in missing:
        reference = load_reference(run)
        parts["c2st"] = {
            **timed("c2st", lambda: c2st_sbibm(reference, samples)),
            "reference": d.reference,
        }
    calibration = None
    if calibration_due:
        calibration = Calibration.model_validate(
            timed("calibration", lambda: _calibration(run, client, should_stop))
        )
    diagnostics = RoundDiagnostics.model_validate(
        {**stored.model_dump(), **parts, "seconds": seconds}
    )
    return diagnostics, calibration


def _previous_summary(run: Run, round_: int) -> dict[str, dict[str, Any]]:
    """The posterior summary of ``round_`` that :func:`movement` compares with: its checks'
    one, else its checkpoint's (empty: neither is stored)."""
    previous = run.store.diagnostics(round_)
    if previous is not None and previous.posterior:
        return {name: s.model_dump() for name, s in previous.posterior.items()}
    summary = run.store.posterior_summary(round_)
    if summary is None:
        return {}
    return {name: s.model_dump() for name, s in summary.parameters.items()}


def diagnose(
    run: Run,
    round_: int,
    client: Any = None,
    *,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> StageResult[Diagnosed]:
    """Check a finished round's posterior and commit the results in one write.

    Computes what is missing of: the posterior summary at x_o with the MAP estimate
    (``posterior``, ``map``), the posterior predictive check (``predictive``: simulated
    on Dask), the movement from the previous round (``movement``), C2ST against the
    reference samples (``c2st``); on round 1, calibration (the ``calibration`` attribute).
    Figures go into the run's figures folder (``report/figures``, see ``RunLayout``):
    ``round_NNN_predictive.png``, ``calibration_ranks.png`` and ``calibration_coverage.png``.

    Args:
        run: The open run.
        round_: A finished round (stage DONE).
        client: A ``distributed.Client``, or a function returning one; called only when
            simulations are left to run (None: no simulating check may be due).
        should_stop: Polled while simulating and between parts; True raises
            ``RunInterrupted`` and commits nothing (finished chunks stay committed).
        progress: ``progress(done, total, rate)`` of the predictive simulations.

    Returns:
        The stage's result; ``details`` holds the parts computed.
    """
    store = run.store
    stage = store.stage(round_)
    if stage != Stage.DONE:
        raise RuntimeError(
            f"round {round_} is not finished (stage {stage.name.lower() if stage else None}); "
            "run its stages up to checkpoint before checking it"
        )
    stored = store.diagnostics(round_) or RoundDiagnostics()
    missing = _wanted(run, round_, stored)
    calibration_due = _calibration_due(run, round_)
    if not missing and not calibration_due:
        return StageResult(round=round_, stage="diagnose", skipped=True, seconds=0.0)
    if client is None and (("predictive" in missing) or calibration_due):
        raise ValueError("the predictive check and calibration simulate on Dask: give a client")
    t0 = time.perf_counter()
    diagnostics, calibration = _compute(
        run, round_, stored, missing, calibration_due, client, should_stop, progress
    )
    store.write_diagnostics(round_, diagnostics, calibration)
    elapsed = time.perf_counter() - t0
    return StageResult(
        round=round_,
        stage="diagnose",
        skipped=False,
        seconds=elapsed,
        details=Diagnosed(parts=(*missing, *(["calibration"] if calibration_due else []))),
    )
