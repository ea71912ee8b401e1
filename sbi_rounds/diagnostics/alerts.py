"""Warnings that matter about a finished round, read from the run file.

Each is one sentence that says what happened and what to do: a training cut by a cap while
its validation loss was still improving, a posterior at ``xobs`` about as wide as the prior,
a miscalibrated round-1 estimator (rank, coverage or TARP tests failing beyond chance), a
final posterior whose width still changes from the round before, a valid fraction that fell
from the round before, simulations that failed, a posterior estimate whose mass leaks out of
the prior. The console, the HTML report and the Prefect artifacts show the same list
(:func:`round_alerts`).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

from sbi_rounds.methods.leakage import LEAKY_FRACTION, leakage_advice, percent
from sbi_rounds.store.schema import TrainingAttempt, TrainingSummaryRecord

__all__ = [
    "CALIBRATION_LEVEL",
    "COVERAGE_BAND",
    "IMPROVING_TAIL",
    "WIDE_FRACTION",
    "WIDTH_CHANGE",
    "round_alerts",
    "simulation_alerts",
    "stop_label",
]

#: A training cut by a cap is "still improving" when its best validation loss came in the
#: last ``max(3, IMPROVING_TAIL * epochs)`` epochs.
IMPROVING_TAIL = 0.1
#: A posterior is "about as wide as the prior" when every parameter's sd is at least this
#: fraction of the prior's.
WIDE_FRACTION = 0.7
#: A valid fraction "fell" when it is this much (absolute) below the round before's.
VALID_DROP = 0.05
#: Family-wise level of the calibration tests (marginal rank KS tests, the coverage KS test
#: and TARP's), Bonferroni-corrected: a calibrated estimator is flagged 5% of the time.
CALIBRATION_LEVEL = 0.05
#: Expected coverage at 90% is flagged outside the band a calibrated estimator stays in with
#: this probability (binomial over the test simulations, normal approximation).
COVERAGE_BAND = 0.99
#: The last round's posterior "has not settled" when a parameter's sd differs from the
#: round before's by more than this fraction.
WIDTH_CHANGE = 0.25


def stop_label(summary: TrainingSummaryRecord | None) -> str | None:
    """Why a training stopped, in a word: ``patience``, ``max_epochs``, ``max_time``, ... ."""
    if summary is None:
        return None
    if summary.limit_reached:
        return summary.limit_reached
    reason = summary.stop_reason
    if reason.startswith("validation loss did not improve"):
        return "patience"
    if "learning rate" in reason or "min_lr" in reason:
        return "min_lr"
    return reason or None


def _capped(
    round_: int, summary: TrainingSummaryRecord | None, attempts: list[TrainingAttempt]
) -> str | None:
    """A training cut by a cap while it still improved, or whose kept network stalled (a
    stall cut by a cap is not retrained: it would stop at the same cap)."""
    if summary is None:
        return None
    cap, epochs, best = summary.limit_reached, summary.epochs, summary.best_epoch
    if not cap or not epochs or not best:
        return None
    kept = [a for a in attempts if a.kept]
    stalled = kept[-1] if kept and kept[-1].stalled else None
    if best > epochs - max(3, math.ceil(IMPROVING_TAIL * epochs)):
        why = f"while the validation loss was still improving (best at epoch {best} of {epochs})"
    elif stalled is not None:
        why = "before the network trained"
    else:
        return None
    if stalled is not None:
        why += (
            f"; its validation loss {stalled.loss:.3f} is above the "
            f"{stalled.reference.replace('_', ' ')} reference's {stalled.reference_loss:.3f}"
            " (a stall, not retrained: it would stop at the same cap)"
        )
    return (
        f"round {round_}: training stopped at its cap ({summary.stop_reason}) {why}: "
        f"the network is undertrained; raise training.{cap} or leave it unset and let "
        "patience stop it"
    )


def _prior_sd(run: Any) -> np.ndarray:
    p = run.config.prior
    if p.low is not None and p.high is not None:
        return (np.asarray(p.high) - np.asarray(p.low)) / math.sqrt(12.0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return run.prior.sample((4000,)).double().std(0).numpy()


def _as_wide_as_prior(run: Any, round_: int) -> str | None:
    summary = run.store.posterior_summary(round_)
    if summary is None or not summary.parameters:
        return None
    post = np.array([v.std for v in summary.parameters.values()], dtype=float)
    prior = _prior_sd(run)
    if post.shape != prior.shape or not np.all(prior > 0):
        return None
    ratio = post / prior
    if not np.all(ratio >= WIDE_FRACTION):
        return None
    ratios = ", ".join(f"{r:.2f}" for r in ratio)
    return (
        f"round {round_}: the posterior at xobs is about as wide as the prior (sd / prior sd: "
        f"{ratios}): the network learned little from the simulations; check that the "
        "simulator's output depends on the parameters, and the training's stop reason"
    )


def _leaking(run: Any, round_: int) -> str | None:
    """A posterior estimate with less than :data:`LEAKY_FRACTION` of its mass in the prior."""
    mass = run.store.prior_mass(round_)
    if mass is None or mass.fraction >= LEAKY_FRACTION:
        return None
    kept = (
        "none of them kept"
        if mass.fraction == 0
        else f"about 1 in {1 / mass.fraction:,.0f} kept when sampling"
    )
    return (
        f"round {round_}: only {percent(mass.fraction)} of the posterior estimate at xobs lies "
        f"inside the prior ({mass.inside} of {mass.draws} network "
        f"draws; {kept}): its density leaks out of the prior, so sampling it is slow and "
        f"its shape may be wrong. {leakage_advice(run.config.method, round_)}"
    )


def _valid_fraction(store: Any, round_: int) -> float | None:
    """The round's fraction of valid simulations (None: not counted yet, or none run)."""
    c = store.counts(round_)
    return c.valid / c.simulations if c.known and c.simulations else None


def simulation_alerts(store: Any, round_: int) -> list[str]:
    """Warnings about a round's simulations: failed ones, and a valid fraction that fell from
    the round before (``store``: a ``RunStore``)."""
    c = store.counts(round_)
    alerts = []
    failed = c.invalid if c.known else 0
    if failed > 0:
        alerts.append(
            f"round {round_}: {failed} of {c.simulations} simulations failed (non-finite "
            "output or an error); they are left out of training"
        )
    now, before = _valid_fraction(store, round_), None
    if round_ > 1 and (round_ - 1) in store.rounds():
        before = _valid_fraction(store, round_ - 1)
    if now is not None and before is not None and now < before - VALID_DROP:
        alerts.append(
            f"round {round_}: {100 * now:.0f}% of the simulations were valid, down from "
            f"{100 * before:.0f}% in round {round_ - 1}: the proposal reaches parameters where "
            "the simulator fails"
        )
    return alerts


def _miscalibrated(run: Any, round_: int) -> str | None:
    """Round 1's calibration (SBC ranks, expected coverage, TARP) failing beyond chance."""
    calibration = run.store.calibration(1) if round_ == 1 else None
    if calibration is None or calibration.valid < 2:
        return None
    tests = {f"rank test of {n}": p.ks_p_value for n, p in calibration.parameters.items()}
    tests["coverage rank test"] = calibration.coverage.ks_p_value
    if calibration.tarp is not None:
        tests["TARP"] = calibration.tarp.ks_p_value
    failed = [
        f"{name} p={p:.2g}" for name, p in tests.items() if p < CALIBRATION_LEVEL / len(tests)
    ]
    levels, values = calibration.coverage.levels, calibration.coverage.values
    at90 = values[min(range(len(levels)), key=lambda i: abs(levels[i] - 0.9))]
    z = NormalDist().inv_cdf(0.5 + COVERAGE_BAND / 2)
    half = z * math.sqrt(0.9 * 0.1 / calibration.valid)
    off = abs(at90 - 0.9) > half
    if off:
        failed.insert(
            0,
            f"expected coverage {at90:.2f} at 90%, outside {0.9 - half:.2f}-"
            f"{min(1.0, 0.9 + half):.2f}",
        )
    if not failed:
        return None
    if off:
        way = "too narrow (overconfident)" if at90 < 0.9 else "too wide (underconfident)"
    elif calibration.tarp is not None and calibration.tarp.ks_p_value < CALIBRATION_LEVEL:
        way = "too wide" if calibration.tarp.atc > 0 else "too narrow or biased"
    else:
        way = "off in shape or place"
    return (
        f"round {round_}: the posterior estimator is miscalibrated on {calibration.valid} "
        f"prior tests ({'; '.join(failed)}): its credible regions are {way}. Try more "
        "simulations in round 1, a longer training (training.patience), or the other "
        "network (network.model maf or nsf); see the report's calibration figures"
    )


def _width_unsettled(run: Any, round_: int) -> str | None:
    """The last round's posterior width still changing by more than :data:`WIDTH_CHANGE`."""
    if round_ < 2 or round_ != run.config.rounds:
        return None
    checks = run.store.diagnostics(round_)
    movement = checks.movement if checks is not None else None
    if movement is None or movement.max_width_change is None:
        return None
    if not movement.max_width_change > WIDTH_CHANGE:
        return None
    changes = ", ".join(
        f"{name} x{m.width_ratio:.2f}"
        for name, m in movement.parameters.items()
        if m.width_ratio is not None and abs(m.width_ratio - 1) > WIDTH_CHANGE
    )
    return (
        f"round {round_}: the final posterior's width changed from round {round_ - 1}'s by "
        f"more than {100 * WIDTH_CHANGE:.0f}% (sd {changes}): the estimate has not settled. "
        "Run more rounds (--rounds) or more simulations per round, and check the calibration"
    )


def round_alerts(run: Any, round_: int) -> list[str]:
    """The warnings about finished round ``round_`` of ``run`` (an open ``Run``), worst first."""
    store = run.store
    alerts = [
        _capped(round_, store.training_summary(round_), store.training_attempts(round_)),
        _as_wide_as_prior(run, round_),
        _miscalibrated(run, round_),
        _width_unsettled(run, round_),
        _leaking(run, round_),
    ]
    alerts.extend(simulation_alerts(store, round_))
    return [a for a in alerts if a]
