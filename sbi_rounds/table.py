"""The per-round table: one row per round, read from the run file, and its text form."""

from __future__ import annotations

import math
from typing import Any

from sbi_rounds.store import RunStore

__all__ = ["format_round_table", "round_table"]


def round_table(store: RunStore) -> list[dict[str, Any]]:
    """One row per round: simulations, valid, the kept network, epochs, best validation loss,
    retrains, seconds per stage."""
    rows = []
    for r in store.rounds():
        counts = store.counts(r)
        summary = store.training_summary(r)
        timings = store.timings(r)
        rows.append(
            {
                "round": r,
                "stage": store.stage(r).name.lower(),
                "simulations": counts["simulations"],
                "valid": counts["valid"],
                "epochs": summary.get("epochs"),
                "best_val_loss": summary.get("best_val_loss"),
                **(_training(store.training_attempts(r)) if summary else {}),
                **{f"{k}_s": v for k, v in timings.items()},
            }
        )
    return rows


def _training(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """Trainings again after a stall (``retrains``) and the kept network's model."""
    kept = [a for a in attempts if a.get("kept")]
    return {
        "retrains": max(0, sum(not a.get("fallback") for a in attempts) - 1),
        "network": kept[-1].get("network") if kept else None,
    }


def format_round_table(rows: list[dict[str, Any]]) -> str:
    """The round table as aligned text."""
    cols = [
        ("round", "round"),
        ("simulations", "sims"),
        ("valid", "valid"),
        ("network", "network"),
        ("epochs", "epochs"),
        ("best_val_loss", "best val loss"),
        ("retrains", "retrained"),
        ("sample_s", "sample s"),
        ("simulate_s", "simulate s"),
        ("train_s", "train s"),
        ("posterior_s", "posterior s"),
        ("checkpoint_s", "ckpt s"),
    ]

    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v == -1:
            return "-"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    table = [[h for _, h in cols]] + [[fmt(row.get(k)) for k, _ in cols] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in table)
