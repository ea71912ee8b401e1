"""The report's first screen: the final posterior, the warnings, and where the run ran.

It answers "what is my posterior" before the per-round detail: the last finished round's
summary table, its pairplot with axes fitted to the samples (the prior's bounds dashed where
in view), every round's marginals overlaid, then the warnings of every round
(``sbi_rounds.diagnostics.round_alerts``).
"""

from __future__ import annotations

import html
import platform
import socket
from importlib import metadata
from typing import Any

from sbi_rounds.diagnostics.alerts import round_alerts
from sbi_rounds.diagnostics.posterior_plots import marginals_by_round_png, posterior_pairplot_png
from sbi_rounds.lifecycle.run import Run, parameter_names
from sbi_rounds.report.html import image
from sbi_rounds.store import Stage

__all__ = ["environment_facts", "final_posterior_section", "warnings_section"]

#: Packages whose versions the report names.
PACKAGES = ("sbi-rounds", "sbi", "torch", "numpy", "h5py", "prefect", "dask", "distributed")


def _prior(run: Run) -> list[tuple[float, float]] | None:
    p = run.config.prior
    if p.low is not None and p.high is not None:
        return list(zip(p.low, p.high, strict=True))
    return None


def final_posterior_section(run: Run, posterior_table: Any) -> str:
    """The last finished round's posterior: table (``posterior_table(run, r, diag, id)``,
    ``diag`` its ``RoundDiagnostics`` or None), a pairplot fitted to its samples and the
    marginals of every round overlaid."""
    done = [r for r in run.store.rounds() if run.store.stage(r) == Stage.DONE]
    if not done:
        return '<h2 id="final-posterior">Posterior</h2><p class="note">No round finished yet.</p>'
    last = done[-1]
    names = parameter_names(run)
    samples = {r: run.store.read_samples(r) for r in done}
    diag = run.store.diagnostics(last)
    truth = run.config.diagnostics.true_parameters
    pairplot = posterior_pairplot_png(samples[last], names, prior=_prior(run), points=truth)
    overlay = marginals_by_round_png(samples, names, prior=_prior(run))
    return (
        f'<section id="final-posterior"><h2>Posterior at x_o (round {last} of '
        f"{run.config.rounds})</h2>"
        + posterior_table(run, last, diag, "final-posterior-table")
        + image(pairplot, f"Posterior of round {last}, axes fitted to the samples", "")
        + '<p class="note">Axes fitted to the samples; dashed lines: the prior\'s bounds '
        "where they are in view. The per-round pairplots below keep the prior's box.</p>"
        + "<h3>Marginals by round</h3>"
        + image(overlay, "Posterior marginals of every round, overlaid", "")
        + "</section>"
    )


def warnings_section(run: Run) -> str:
    """Every finished round's warnings (capped trainings, wide posteriors, failures)."""
    done = [r for r in run.store.rounds() if run.store.stage(r) == Stage.DONE]
    alerts = [a for r in done for a in round_alerts(run, r)]
    if not alerts:
        return '<p class="note" id="warnings">No warnings.</p>'
    items = "".join(f"<li>{html.escape(a)}</li>" for a in alerts)
    return f'<h2>Warnings</h2><ul class="stop" id="warnings">{items}</ul>'


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_facts(run: Run) -> list[tuple[str, str]]:
    """Rows of the report's facts: the versions that wrote the run file and that wrote the
    report, and the host."""
    made = run.store.provenance()
    rows = []
    if made["versions"]:
        written = ", ".join(f"{k} {v}" for k, v in made["versions"].items())
        rows.append(("run file created with", f"{written}, on {made['created_on'] or '?'}"))
    now = ", ".join(f"{p} {_version(p)}" for p in PACKAGES)
    rows.append(("report written with", f"{now}, Python {platform.python_version()}"))
    rows.append(("host", f"{socket.gethostname()} ({platform.platform(terse=True)})"))
    return rows
