"""The per-round table: one typed row per round, read from the run file, and its text form."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from sbi_rounds.diagnostics.alerts import stop_label
from sbi_rounds.missing import is_missing
from sbi_rounds.store import RunStore, TrainingAttempt

__all__ = [
    "ROUND_COLUMNS",
    "Column",
    "RoundRow",
    "format_round_table",
    "round_line",
    "round_table",
    "shown_columns",
]


@dataclass(frozen=True)
class Column:
    """A column of the round table: its key (the :class:`RoundRow` field), its name, its
    short title in the console (None: not shown there), its unit (``"s"``: seconds, ``"%"``:
    percent), and whether it is left out where no round has a value (a column of some
    methods only)."""

    key: str
    name: str
    short: str | None
    unit: str | None = None
    optional: bool = False

    def value(self, row: RoundRow) -> Any:
        """The column's value in ``row`` (None: unknown)."""
        return getattr(row, self.key)

    @property
    def decimals(self) -> int | None:
        """The decimals its values show (seconds: 2); None: the view's own format."""
        return 2 if self.unit == "s" else None

    def format(self, value: float) -> str:
        """A float as the console shows it: seconds with 2 decimals, percentages with 2
        significant digits below 10%, anything else with 3 decimals."""
        if self.unit == "%":
            return f"{value:.2g}%" if value < 10 else f"{value:.0f}%"
        return f"{value:.{3 if self.decimals is None else self.decimals}f}"

    @property
    def title(self) -> str:
        """The title in the Prefect artifact and the report, e.g. ``train (s)``."""
        return f"{self.name} ({self.unit})" if self.unit else self.name


#: The round table's columns: the console, the Prefect artifact and the HTML report all
#: show these (the console the ones with a short title).
ROUND_COLUMNS = (
    Column("round", "round", "round"),
    Column("stage", "stage", None),
    Column("simulations", "simulations", "sims"),
    Column("valid", "valid", "valid"),
    Column("network", "network", "network"),
    Column("epochs", "epochs", "epochs"),
    Column("stop", "stopped by", "stopped by"),
    Column("best_val_loss", "best validation loss", "best val loss"),
    Column("retrains", "retrained", "retrained"),
    Column("in_prior", "in prior", "in prior", "%", optional=True),
    Column("sample_s", "sample", "sample s", "s"),
    Column("simulate_s", "simulate", "simulate s", "s"),
    Column("append_s", "append", None, "s"),
    Column("train_s", "train", "train s", "s"),
    Column("posterior_s", "posterior", "posterior s", "s"),
    Column("checkpoint_s", "checkpoint", "ckpt s", "s"),
    Column("commit_s", "commit", None, "s"),
    Column("checks_s", "checks", "checks s", "s"),
)


class RoundRow(BaseModel):
    """One round of the round table; each field is the column of :data:`ROUND_COLUMNS`
    with its name as key. None: not known yet (not trained, not checked) or not measured
    (``in_prior``: methods that measure leakage only); NaN seconds: the stage did not run.

    Attributes:
        round: The round, 1-based.
        stage: The last stage it reached, lower case (``planned`` ... ``done``).
        simulations: Its simulations; valid: those valid (-1: not counted yet).
        network: The kept network's model; epochs, stop, best_val_loss: its training's
            epochs, why it stopped (``sbi_rounds.diagnostics.alerts.stop_label``) and best
            validation loss; retrains: trainings again after a stall.
        in_prior: Percent of the posterior inside the prior.
        sample_s ... commit_s: Seconds per stage (``RunStore.timings``); checks_s: of the
            posterior checks.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    round: int
    stage: str
    simulations: int
    valid: int
    network: str | None = None
    epochs: int | None = None
    stop: str | None = None
    best_val_loss: float | None = None
    retrains: int | None = None
    in_prior: float | None = None
    sample_s: float | None = None
    simulate_s: float | None = None
    append_s: float | None = None
    train_s: float | None = None
    posterior_s: float | None = None
    checkpoint_s: float | None = None
    commit_s: float | None = None
    checks_s: float | None = None


def shown_columns(rows: list[RoundRow]) -> list[Column]:
    """The columns of :data:`ROUND_COLUMNS` to show for ``rows``: all but the optional ones
    no row has a value for."""
    return [c for c in ROUND_COLUMNS if not c.optional or any(c.value(r) is not None for r in rows)]


def round_table(store: RunStore) -> list[RoundRow]:
    """One row per round: simulations, valid, the kept network, epochs, why training stopped,
    best validation loss, retrains, the posterior's percent inside the prior (methods that
    measure leakage), seconds per stage and of the posterior checks."""
    rows = []
    for r in store.rounds():
        counts = store.counts(r)
        summary = store.training_summary(r)
        diagnostics = store.diagnostics(r)
        mass = store.prior_mass(r)
        rows.append(
            RoundRow(
                round=r,
                stage=store.stage(r).name.lower(),
                simulations=counts.simulations,
                valid=counts.valid,
                epochs=None if summary is None else summary.epochs,
                best_val_loss=None if summary is None else summary.best_val_loss,
                stop=stop_label(summary),
                **(_training(store.training_attempts(r)) if summary else {}),
                in_prior=None if mass is None else 100 * mass.fraction,
                **{f"{k}_s": v for k, v in store.timings(r).by_stage().items()},
                checks_s=None if diagnostics is None else diagnostics.seconds.total,
            )
        )
    return rows


def _training(attempts: list[TrainingAttempt]) -> dict[str, Any]:
    """Trainings again after a stall (``retrains``) and the kept network's model."""
    kept = [a for a in attempts if a.kept]
    return {
        "retrains": max(0, sum(not a.fallback for a in attempts) - 1),
        "network": kept[-1].network if kept else None,
    }


def format_round_table(rows: list[RoundRow]) -> str:
    """The round table as aligned text."""
    cols = [c for c in shown_columns(rows) if c.short is not None]

    def fmt(v: Any, column: Column) -> str:
        if is_missing(v) or v == -1:
            return "-"
        return column.format(v) if isinstance(v, float) else str(v)

    table = [[c.short for c in cols]] + [[fmt(c.value(row), c) for c in cols] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in table)


#: The stages a round's summary line names, in order, with their words.
_LINE_STAGES = (
    ("simulate_s", "simulate"),
    ("train_s", "train"),
    ("posterior_s", "posterior"),
    ("checks_s", "checks"),
)


def round_line(row: RoundRow, rounds: int) -> str:
    """One line about a finished round, e.g. ``round 1/3 done: 1000 simulations (1000 valid),
    57 epochs (stopped by patience), best validation loss -1.82; seconds: simulate 3.7,
    train 12.1, posterior 0.4``."""
    text = f"round {row.round}/{rounds} done: {row.simulations} simulations"
    text += f" ({row.valid} valid)"
    if row.epochs is not None:
        text += f", {row.epochs} epochs"
        if row.stop:
            text += f" (stopped by {row.stop})"
    loss = row.best_val_loss
    if isinstance(loss, float) and math.isfinite(loss):
        text += f", best validation loss {loss:.4g}"
    seconds = [(w, getattr(row, k)) for k, w in _LINE_STAGES]
    seconds = [f"{w} {v:.1f}" for w, v in seconds if isinstance(v, (int, float)) and v >= 0]
    return text + (f"; seconds: {', '.join(seconds)}" if seconds else "")
