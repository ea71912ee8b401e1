"""The run report: one self-contained HTML file, every figure embedded, read from the run file."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sbi_rounds.diagnostics.checks import QUANTILES
from sbi_rounds.diagnostics.plots import loss_curves_png
from sbi_rounds.diagnostics.summary import stop_reason
from sbi_rounds.lifecycle.run import Run, parameter_names
from sbi_rounds.report.html import CSS as _CSS
from sbi_rounds.report.html import format_number
from sbi_rounds.report.html import image as _img
from sbi_rounds.report.html import run_figure as _png
from sbi_rounds.report.html import table as _table
from sbi_rounds.report.results import load_run
from sbi_rounds.report.summary import (
    environment_facts,
    final_posterior_section,
    warnings_section,
)
from sbi_rounds.report.table import round_table, shown_columns
from sbi_rounds.store import RoundDiagnostics, Stage
from sbi_rounds.store.schema import ParameterStatistics, ParameterSummary, PredictiveCheck

__all__ = ["format_number", "render_report", "stopped_early", "write_report"]

#: Units of the round table whose columns the report groups, with the group's title.
_UNIT_GROUPS = {"s": "seconds"}


def stopped_early(run: Run) -> str | None:
    """Why the run ended before its last round (stopping rule), or None."""
    done = [r for r in run.store.rounds() if run.store.stage(r) == Stage.DONE]
    return stop_reason(run, done[-1]) if done else None


def _rounds_section(run: Run) -> str:
    table = round_table(run.store)
    columns = shown_columns(table)
    rows = [[c.value(row) for c in columns] for row in table]
    histories = {r: run.store.read_history(r) for r in run.store.rounds()}
    curves = loss_curves_png({r: {k: list(v) for k, v in h.items()} for r, h in histories.items()})
    return (
        "<h2>Rounds</h2>"
        + _table(
            "rounds",
            [c.name if c.unit in _UNIT_GROUPS else c.title for c in columns],
            rows,
            groups=[_UNIT_GROUPS.get(c.unit or "") for c in columns],
            decimals=[c.decimals for c in columns],
        )
        + '<p class="note">Seconds per stage; "checks" is the posterior checks of the round '
        "(MAP, predictive simulations, C2ST, calibration).</p>"
        + "<h3>Loss curves</h3>"
        + _img(curves, "Training and validation loss per epoch", "No round was trained yet.")
        + f'<p class="note" id="loss-note">{html.escape(_loss_note(run))}</p>'
    )


def _loss_note(run: Run) -> str:
    """What the losses of different rounds mean, so that nobody compares them."""
    note = (
        "Losses of different rounds are not comparable: each round trains and validates on "
        "all simulations so far, drawn from a different proposal."
    )
    extra = run.method.loss_note
    return f"{note} {extra}" if extra else note


def _posterior_summary(
    run: Run, r: int, diag: RoundDiagnostics | None
) -> Mapping[str, ParameterStatistics | ParameterSummary]:
    """The round's posterior summary: its checks' one (quantiles, MAP, truth), else its
    checkpoint's (mean, sd, 5/50/95%); empty when neither is stored."""
    if diag is not None and diag.posterior:
        return diag.posterior
    summary = run.store.posterior_summary(r)
    return {} if summary is None else summary.parameters


def _posterior_table(
    run: Run, r: int, diag: RoundDiagnostics | None, table_id: str | None = None
) -> str:
    summary = _posterior_summary(run, r, diag)
    truth = run.config.diagnostics.true_parameters is not None
    header = ["parameter", "mean", "sd", *[k for k, _ in QUANTILES], "MAP"]
    fields = ["mean", "std", *[k for k, _ in QUANTILES], "map"]
    if truth:
        header += ["true", "quantile of true"]
        fields += ["truth", "truth_quantile"]
    rows = []
    for name in parameter_names(run):
        s = summary.get(name)  # the checkpoint's lacks the 25/75% quantiles, MAP, truth: blank
        rows.append([name, *(getattr(s, field, None) for field in fields)])
    return _table(table_id or f"posterior-{r}", header, rows)


def _predictive_table(r: int, check: PredictiveCheck) -> str:
    header = [
        "statistic",
        "x_o",
        "mean",
        "sd",
        "5%",
        "95%",
        "quantile of x_o",
        "p-value",
        "z",
        "flagged",
    ]
    stats = check.statistics
    rows = [
        [name, s.xobs, s.mean, s.std, s.q05, s.q95, s.quantile, s.p_value, s.z, s.flagged]
        for name, s in stats.items()
    ]
    joint = check.joint
    joint_text = (
        ""
        if joint is None
        else f"Joint (Mahalanobis) distance of x_o {format_number(joint.distance)}, p-value "
        f"{format_number(joint.p_value)}{' (flagged)' if joint.flagged else ''}. "
    )
    flagged = check.flagged
    verdict = (
        f"Flagged: {', '.join(flagged)}: the posterior does not reproduce "
        f"{'this statistic' if len(flagged) == 1 else 'these statistics'}."
        if flagged
        else "No statistic flagged."
    )
    return (
        _table(f"predictive-{r}", header, rows, [s.flagged for s in stats.values()])
        + f'<p class="note">{check.valid} valid of {check.simulations} predictive '
        f"simulations. {html.escape(joint_text + verdict)}</p>"
    )


def _round_sections(run: Run, diagnostics: Mapping[int, RoundDiagnostics | None]) -> str:
    parts = ["<h2>Posterior per round</h2>"]
    for r in run.store.rounds():
        if run.store.stage(r) != Stage.DONE:
            continue
        diag = diagnostics.get(r)
        summary = run.store.posterior_summary(r)
        parts.append(f'<section id="round-{r}"><h3>Round {r}</h3>')
        parts.append(_posterior_table(run, r, diag))
        parts.append(_png(run, summary and summary.pairplot, f"Pairplot, round {r}"))
        check = None if diag is None else diag.predictive
        if check is not None:
            parts.append("<h4>Posterior predictive check</h4>")
            parts.append(_predictive_table(r, check))
            parts.append(_png(run, check.figure, f"Predictive check, round {r}"))
        parts.append("</section>")
    return "".join(parts)


def _movement_section(run: Run, diagnostics: Mapping[int, RoundDiagnostics | None]) -> str:
    names = parameter_names(run)
    d = run.config.diagnostics
    header = ["round"]
    for name in names:
        header += [f"{name} mean shift (sd)", f"{name} width ratio"]
    header += ["max |mean shift|", "max width change", "stable"]
    rows = []
    for r, diag in sorted(diagnostics.items()):
        move = None if diag is None else diag.movement
        if move is None:
            continue
        row: list[Any] = [r]
        for name in names:
            p = move.parameters.get(name)
            row += [None, None] if p is None else [p.mean_shift, p.width_ratio]
        shift, change = move.max_mean_shift, move.max_width_change
        stable = (
            shift is not None
            and change is not None
            and shift < d.stable_mean_shift
            and change < d.stable_width_change
        )
        rows.append([*row, shift, change, stable])
    if not rows:
        return ""
    return (
        "<h2>How the posterior moved</h2>"
        + _table("movement", header, rows)
        + f'<p class="note">Mean shift: (mean<sub>r</sub> - mean<sub>r-1</sub>) / '
        f"sd<sub>r-1</sub>; width ratio: sd<sub>r</sub> / sd<sub>r-1</sub>. A round is stable "
        f"when every |mean shift| &lt; {d.stable_mean_shift:g} and every |width ratio - 1| "
        f"&lt; {d.stable_width_change:g}; the stopping rule "
        f"({'on' if d.stop_when_stable else 'off'}) ends the run after {d.stable_rounds} "
        "stable round(s) in a row.</p>"
    )


def _c2st_section(diagnostics: Mapping[int, RoundDiagnostics | None]) -> str:
    checks = [(r, d.c2st) for r, d in sorted(diagnostics.items()) if d is not None and d.c2st]
    rows = [[r, c.accuracy, c.samples, c.reference] for r, c in checks]
    if not rows:
        return ""
    return (
        "<h2>C2ST against the reference posterior</h2>"
        + _table("c2st", ["round", "C2ST accuracy", "samples per set", "reference"], rows)
        + '<p class="note">As sbibm defines it: MLP classifier (two ReLU layers of 10 D units, '
        "Adam), 5-fold cross-validated accuracy, z-scored with the reference. 0.5: the "
        "posterior cannot be told from the reference; 1.0: disjoint.</p>"
    )


def _no_calibration(run: Run) -> str:
    """Why round 1 was not calibrated."""
    if run.config.calibration_simulations > 0:
        return "Not computed yet: it runs with round 1's checks."
    if run.config.diagnostics.calibration_simulations == "auto":
        return (
            f"Not run, because {run.config.method} samples the posterior of every test "
            "simulation by MCMC (calibration_simulations=auto turns it on only where the "
            "posterior is sampled directly). Run it with --calibration-simulations 200."
        )
    return (
        "Not run, because calibration_simulations is 0. Run it with "
        "--calibration-simulations 200 (some hundreds give a meaningful check)."
    )


def _calibration_section(run: Run) -> str:
    if not run.store.rounds():
        return ""
    cal = run.store.calibration(1)
    if cal is None:
        return (
            '<h2>Calibration of round 1</h2><p class="note" id="calibration">'
            f"{html.escape(_no_calibration(run))}</p>"
        )
    classified = cal.classified
    header = ["parameter", "KS p-value (ranks uniform)"]
    if classified:
        header += ["C2ST ranks vs uniform", "C2ST prior vs data-averaged posterior"]
    rows = [
        [name, p.ks_p_value] + ([p.c2st_ranks, p.c2st_dap] if classified else [])
        for name, p in cal.parameters.items()
    ]
    cov = cal.coverage
    levels = dict(zip(cov.levels, cov.values, strict=True))
    shown = [lv for lv in (0.5, 0.8, 0.9, 0.95) if lv in levels]
    warn = "".join(f"<li>{html.escape(w)}</li>" for w in cal.warnings)
    figures = cal.figures
    return (
        "<h2>Calibration of round 1</h2>"
        f"<p>{cal.valid} valid of {cal.test_simulations} test simulations from the prior, "
        f"{cal.posterior_samples} posterior samples each; estimator: "
        f"{html.escape(cal.estimator or 'round 1')}.</p>"
        + _table(
            "calibration",
            header,
            rows,
        )
        + _table(
            "coverage",
            ["credibility level", *[f"{lv:.0%}" for lv in shown], "KS p-value"],
            [["expected coverage", *[levels[lv] for lv in shown], cov.ks_p_value]],
        )
        + (
            ""
            if cal.tarp is None
            else _table(
                "tarp",
                ["TARP (joint coverage)", "area to diagonal", "KS p-value"],
                [["TARP", cal.tarp.atc, cal.tarp.ks_p_value]],
            )
        )
        + '<p class="note">Calibrated: KS p-values not small, '
        + ("C2ST near 0.5, " if classified else "")
        + "coverage equal to the level (below it: overconfident; above: underconfident), "
        "TARP's area near 0 (above: too wide; below: too narrow). "
        + html.escape(cal.note or "")
        + "</p>"
        + (f'<ul class="note">{warn}</ul>' if warn else "")
        + _png(run, figures.get("ranks"), "SBC rank histograms")
        + _png(run, figures.get("coverage"), "SBC rank CDFs and expected coverage")
    )


def _imported_facts(run: Run) -> list[tuple[str, str]]:
    """Where round 1's simulations came from, when the run started from simulations it had."""
    if 1 not in run.store.rounds():
        return []
    imported = run.store.round_info(1).proposal.get("imported")
    if imported is None:
        return []
    return [("round 1 imported", f"{imported['rows']} pairs from {imported['source']}")]


def _named_values(names: list[str] | None, values: list[float]) -> list[str]:
    """``["flux=0.5", ...]`` where x has names, else ``["0.5", ...]``."""
    text = [f"{v:.6g}" for v in values]
    return text if names is None else [f"{n}={t}" for n, t in zip(names, text, strict=True)]


def render_report(run: Run) -> str:
    """The report of ``run`` as one HTML document (figures as ``data:`` URIs)."""
    cfg = run.config
    done = [r for r in run.store.rounds() if run.store.stage(r) == Stage.DONE]
    diagnostics = {r: run.store.diagnostics(r) for r in done}
    run_id = run.directory.name
    early = stopped_early(run)
    rows = round_table(run.store)
    total = sum(max(row.simulations, 0) for row in rows)
    facts = [
        ("run", run_id),
        ("run file", str(run.store.path)),
        ("method", cfg.method),
        ("rounds finished", f"{len(done)} of {cfg.rounds}"),
        ("simulations", str(total)),
        *_imported_facts(run),
        ("x_o", ", ".join(_named_values(cfg.x_names, cfg.xobs))),
        ("parameters", ", ".join(parameter_names(run))),
        *environment_facts(run),
    ]
    facts_html = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts
    )
    history = run.store.config_history()
    changes = "".join(
        f"<li>{html.escape('; '.join(h['changes']))}</li>" for h in history if h.get("changes")
    )
    config_json = json.dumps(cfg.model_dump(mode="json"), indent=2, sort_keys=True)
    return "".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>sbi-rounds run {html.escape(run_id)}</title><style>{_CSS}</style></head>",
            f"<body><h1>sbi-rounds run {html.escape(run_id)}</h1>",
            f'<table id="facts">{facts_html}</table>',
            f'<p class="stop" id="stopped-early">{html.escape(early)}</p>' if early else "",
            final_posterior_section(run, _posterior_table),
            warnings_section(run),
            _rounds_section(run),
            _round_sections(run, diagnostics),
            _movement_section(run, diagnostics),
            _c2st_section(diagnostics),
            _calibration_section(run),
            "<h2>Settings</h2>",
            f'<pre id="config">{html.escape(config_json)}</pre>',
            f"<p>Changed between sessions:</p><ul>{changes}</ul>" if changes else "",
            '<p class="note">Predictive check: a statistic is flagged when x_o lies outside '
            "the central 1 - alpha interval of its posterior predictive distribution "
            f"(alpha = {cfg.diagnostics.predictive_alpha:g}): two-sided p-value "
            "2 min(q, 1 - q) &lt; alpha, with q the predictive quantile of x_o; z is "
            "(x_o - mean) / sd of the predictive simulations.</p>",
            "</body></html>",
        ]
    )


def write_report(path: str | Path, output: str | Path | None = None) -> Path:
    """Write the HTML report of a run (read-only on the run; no lock needed).

    Args:
        path: The run's ``run.h5`` or its directory.
        output: Where the report goes; default ``<run dir>/report/report.html``
            (``RunLayout.report``).

    Returns:
        The report's path.
    """
    run = load_run(path)
    out = Path(output) if output is not None else run.layout.report
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_report(run), encoding="utf-8")
    tmp.replace(out)
    return out
