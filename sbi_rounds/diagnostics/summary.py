"""The committed checks read back: the stopping decision, terminal text and tracker metrics."""

from __future__ import annotations

import math
from typing import Any

from sbi_rounds.diagnostics.checks import StopDecision, stop_decision
from sbi_rounds.lifecycle.run import Run
from sbi_rounds.missing import is_missing
from sbi_rounds.store import RoundDiagnostics, Stage

__all__ = [
    "check_metrics",
    "describe_checks",
    "format_checks",
    "stop_decision_for",
    "stop_reason",
]


def _diagnostics(run: Run, round_: int) -> RoundDiagnostics:
    """The round's checks (none computed: an empty record)."""
    return run.store.diagnostics(round_) or RoundDiagnostics()


def stop_decision_for(run: Run, round_: int) -> StopDecision | None:
    """The stopping rule applied after ``round_``, or None when it is off.

    Reads the movements committed by ``diagnose`` for rounds ``1 .. round_``, with the
    thresholds of the current settings.
    """
    d = run.config.diagnostics
    if not d.stop_when_stable:
        return None
    movements = [_diagnostics(run, r).movement for r in range(1, round_ + 1)]
    return stop_decision(
        movements,
        mean_shift=d.stable_mean_shift,
        width_change=d.stable_width_change,
        rounds=d.stable_rounds,
    )


def stop_reason(run: Run, round_: int) -> str | None:
    """Why the run ends after ``round_`` although more rounds are asked for, or None.

    The rule applies only when the next round was not started: a resumed run stops at the
    same round, and a run that went on past it (the rule was off then) is not cut.
    """
    if round_ >= run.config.rounds or run.store.stage(round_ + 1) is not None:
        return None
    decision = stop_decision_for(run, round_)
    if decision is None or not decision.stop:
        return None
    return f"stopped after round {round_} of {run.config.rounds}: {decision.reason}"


def describe_checks(run: Run, round_: int) -> str:
    """One line on a round's checks, for the log."""
    diag = _diagnostics(run, round_)
    said = []
    if diag.posterior:
        said.append(
            "posterior "
            + ", ".join(
                f"{name} {s.mean:.4g} +- {s.std:.3g}"
                + ("" if s.map is None else f" (MAP {s.map:.4g})")
                for name, s in diag.posterior.items()
            )
        )
    check = diag.predictive
    if check is not None:
        flagged = [n for n in check.flagged if n in check.statistics]
        said.append(
            "predictive check: no statistic flagged"
            if not flagged
            else "predictive check FLAGS "
            + ", ".join(
                f"{n} (x_o at predictive quantile {check.statistics[n].quantile:.3f})"
                for n in flagged
            )
        )
    move = diag.movement
    if move is not None and move.max_mean_shift is not None:
        said.append(
            f"moved by at most {move.max_mean_shift:.3g} sd, widths changed by at most "
            f"{move.max_width_change:.1%}"
        )
    if diag.c2st is not None:
        said.append(f"C2ST against the reference {diag.c2st.accuracy:.3f}")
    calibration = run.store.calibration(1) if round_ == 1 else None
    if calibration is not None:
        cov = calibration.coverage
        at = dict(zip(cov.levels, cov.values, strict=True))
        said.append(
            f"calibration of round 1 on {calibration.valid} tests: expected coverage "
            f"{at.get(0.9, math.nan):.2f} at 90%, rank KS p-values "
            + ", ".join(f"{p.ks_p_value:.2g}" for p in calibration.parameters.values())
            + (
                ""
                if calibration.tarp is None
                else f", TARP p-value {calibration.tarp.ks_p_value:.2g} "
                f"(area {calibration.tarp.atc:+.2f})"
            )
        )
    return "; ".join(said) or "no checks"


def check_metrics(run: Run, round_: int) -> dict[str, float]:
    """A round's checks as ``round/...`` metrics for a tracker (missing ones left out)."""
    diag = _diagnostics(run, round_)
    check, move = diag.predictive, diag.movement
    metrics = {
        "round/predictive_flagged": None if check is None else len(check.flagged),
        "round/max_mean_shift": None if move is None else move.max_mean_shift,
        "round/max_width_change": None if move is None else move.max_width_change,
        "round/c2st": None if diag.c2st is None else diag.c2st.accuracy,
    }
    return {k: float(v) for k, v in metrics.items() if v is not None}


def _cell(value: Any, fmt: str = ".3g") -> str:
    if is_missing(value):
        return "-"
    return format(value, fmt)


def format_checks(run: Run) -> str:
    """The checks of every finished round as aligned text: movement, predictive flags, C2ST."""
    header = ["round", "max |dmean| (sd)", "max width change", "predictive flags", "C2ST"]
    table = [header]
    for r in run.store.rounds():
        if run.store.stage(r) != Stage.DONE:
            continue
        diag = _diagnostics(run, r)
        move, pred = diag.movement, diag.predictive
        change = None if move is None else move.max_width_change
        table.append(
            [
                str(r),
                _cell(None if move is None else move.max_mean_shift),
                "-" if change is None else f"{change:.1%}",
                "-" if pred is None else (", ".join(pred.flagged) or "none"),
                _cell(None if diag.c2st is None else diag.c2st.accuracy),
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in table
    )
