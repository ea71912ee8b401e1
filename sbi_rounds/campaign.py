"""Campaigns: one run per observation of a table; their settings, state and summary.

Observation ``i`` (from 0) of the table is the run ``obs-000i`` (or the id in its row's
``campaign.id_column``) in the campaign directory, with the shared settings, ``xobs`` set to
row ``i`` and ``x_names`` to the table's header (:mod:`sbi_rounds.observations`): the same
settings and seed as a separate ``sbi-rounds run --xobs ROW``, so the same results. The
summary lists each observation's posterior mean and sd of its last finished round, its
rounds and checks, as console text (:func:`format_summary`) and an HTML page
(:func:`write_summary_html`).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sbi_rounds.config import CampaignConfig, RunConfig
from sbi_rounds.missing import is_missing
from sbi_rounds.observations import observation_id, read_observations
from sbi_rounds.store import RoundDiagnostics, RunFileError, RunStore, Stage
from sbi_rounds.store.layout import RunLayout

__all__ = [
    "RUN_THREAD_PREFIX",
    "SET_BY_CAMPAIGN",
    "format_summary",
    "is_finished",
    "load_observations",
    "observation_configs",
    "observation_id",
    "shared_round_config",
    "summarize",
    "write_summary_html",
]

#: Settings each observation's run gets from the campaign, not from the shared settings.
SET_BY_CAMPAIGN = ("xobs", "run_dir", "run_id")
#: Settings each observation's run gets from the table's header where it has one.
SET_BY_HEADER = "x_names"
SUMMARY_NAME = "summary.html"
#: The run id of the shared first round's run (``campaign.shared_first_round``).
SHARED_ROUND_ID = "shared-round"

#: The name of the thread of an observation's run is this and the run's id (a console
#: labels the lines of concurrent runs by it).
RUN_THREAD_PREFIX = "campaign-"


def load_observations(spec: str) -> np.ndarray:
    """The observations, one per row ``(N, K)``, from ``.csv`` (a header row allowed),
    ``.npy`` or ``file.h5:dataset`` (see :func:`~sbi_rounds.observations.read_observations`).

    Raises:
        ValueError: An unreadable file, an empty table or non-finite values (named by row).
    """
    return read_observations(spec).values


def observation_configs(campaign: CampaignConfig, shared: Mapping[str, Any]) -> list[RunConfig]:
    """One run's settings per observation: the shared settings, the row as ``xobs``.

    Args:
        campaign: The campaign's settings.
        shared: The settings of every run (``RunConfig``'s, without ``xobs``, ``run_dir``
            and ``run_id``, which the campaign sets).

    With ``campaign.shared_first_round``, each run starts from round 1 of the shared run
    (:func:`shared_round_config`).

    Raises:
        ValueError: Shared settings that the campaign sets, or a table that cannot be read.
        pydantic.ValidationError: A wrong shared setting; the message names it.
    """
    given = [k for k in SET_BY_CAMPAIGN if shared.get(k) is not None]
    if given:
        raise ValueError(
            f"a campaign sets {', '.join(given)} of each run itself (from "
            "observations and directory); leave them out of the shared settings"
        )
    table = read_observations(campaign.observations, campaign.id_column)
    named = {}
    if table.names is not None:
        given = shared.get(SET_BY_HEADER)
        if given is not None and list(given) != table.names:
            raise ValueError(
                f"x_names {list(given)} differ from the header of {campaign.observations!r} "
                f"({', '.join(table.names)}); leave x_names out, the header names the columns"
            )
        named = {SET_BY_HEADER: table.names}
    if campaign.shared_first_round:
        if shared.get("start_from") is not None:
            raise ValueError(
                "campaign.shared_first_round starts every run from the shared round; it "
                "cannot also start them from start_from (turn one of them off)"
            )
        path = shared_round_config(campaign, shared).run_path
        named["start_from"] = {"simulations": str(path), "round": 1, "drawn_from": "file"}
    return [
        RunConfig.model_validate(
            {
                **shared,
                **named,
                "xobs": row.tolist(),
                "run_dir": campaign.directory,
                "run_id": id_,
            }
        )
        for id_, row in zip(table.ids, table.values, strict=True)
    ]


def _report_link(config: RunConfig) -> str:
    """The observation's report, relative to the campaign's directory (the summary's link)."""
    directory = config.run_path.parent
    return RunLayout.of(directory).report.relative_to(directory.parent).as_posix()


def shared_round_config(campaign: CampaignConfig, shared: Mapping[str, Any]) -> RunConfig:
    """The run whose round 1 every observation starts from (``shared_first_round``).

    It has the shared settings and seed, so its prior draws and simulations are those each
    observation's own round 1 would have; one round, at the first observation (its
    posterior is a by-product), without predictive or calibration simulations.
    """
    table = read_observations(campaign.observations, campaign.id_column)
    checks = {**shared.get("diagnostics", {}), "predictive_simulations": 0}
    checks["calibration_simulations"] = 0
    return RunConfig.model_validate(
        {
            **shared,
            "xobs": table.values[0].tolist(),
            "rounds": 1,
            "diagnostics": checks,
            "run_dir": campaign.directory,
            "run_id": SHARED_ROUND_ID,
        }
    )


def _open(config: RunConfig) -> RunStore | None:
    if not config.run_path.exists():
        return None
    try:
        return RunStore.open(config.run_path)
    except (RunFileError, OSError):
        return None


def _done_rounds(store: RunStore) -> list[int]:
    return [r for r in store.rounds() if store.stage(r) == Stage.DONE]


def is_finished(config: RunConfig) -> bool:
    """Whether the observation's run is complete: its rounds done and its report written.

    A run that stopped early once its posterior was stable counts as complete too.
    """
    store = _open(config)
    if store is None or not RunLayout.of(config.run_path.parent).report.exists():
        return False
    rounds = store.rounds()
    if not rounds or len(_done_rounds(store)) != len(rounds):
        return False
    return len(rounds) >= config.rounds or config.diagnostics.stop_when_stable


def summarize(configs: Sequence[RunConfig]) -> list[dict[str, Any]]:
    """One row per observation: id, status, rounds done, posterior mean and sd, checks.

    Each row also has the observation ``xobs`` and its ``x_names`` (None: unnamed). The
    posterior is that of the last finished round (``mean``, ``sd``: one value per
    parameter, None before any round finished); the checks are its predictive check's
    flagged statistics, the largest mean shift from the round before (in sd) and C2ST.
    """
    rows = []
    for config in configs:
        store = _open(config)
        done = [] if store is None else _done_rounds(store)
        row: dict[str, Any] = {
            "observation": config.resolved_run_id,
            "xobs": list(config.xobs),
            "x_names": config.x_names,
            "status": "finished" if is_finished(config) else ("started" if store else "waiting"),
            "rounds_done": len(done),
            "rounds": config.rounds,
            "mean": None,
            "sd": None,
            "predictive_flags": None,
            "max_mean_shift": None,
            "c2st": None,
            "report": _report_link(config),
        }
        if done:
            last = done[-1]
            samples = store.read_samples(last)  # type: ignore[union-attr]
            row["mean"] = samples.mean(axis=0).tolist()
            row["sd"] = samples.std(axis=0, ddof=1).tolist()
            diag = store.diagnostics(last) or RoundDiagnostics()  # type: ignore[union-attr]
            if diag.predictive is not None:
                row["predictive_flags"] = list(diag.predictive.flagged)
            if diag.movement is not None:
                row["max_mean_shift"] = diag.movement.max_mean_shift
            if diag.c2st is not None:
                row["c2st"] = diag.c2st.accuracy
        rows.append(row)
    return rows


def _numbers(values: Sequence[float] | None) -> str:
    return "-" if values is None else " ".join(f"{v:.4g}" for v in values)


def _cell(value: Any) -> str:
    if is_missing(value):
        return "-"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return format(value, ".3g") if isinstance(value, float) else str(value)


_COLUMNS = (
    "observation",
    "status",
    "rounds",
    "posterior mean",
    "posterior sd",
    "predictive flags",
    "max |dmean| (sd)",
    "C2ST",
    "x_o",
)


def _cells(row: Mapping[str, Any]) -> list[str]:
    return [
        row["observation"],
        row["status"],
        f"{row['rounds_done']}/{row['rounds']}",
        _numbers(row["mean"]),
        _numbers(row["sd"]),
        _cell(row["predictive_flags"]),
        _cell(row["max_mean_shift"]),
        _cell(row["c2st"]),
        _observed(row["x_names"], row["xobs"]),
    ]


def _observed(names: Sequence[str] | None, values: Sequence[float]) -> str:
    """``flux=0.5 colour=-0.3`` where x has names, else ``0.5 -0.3``."""
    if names is None:
        return _numbers(values)
    return " ".join(f"{n}={v:.4g}" for n, v in zip(names, values, strict=True))


def format_summary(rows: Sequence[Mapping[str, Any]]) -> str:
    """The summary as aligned text, one line per observation."""
    table = [list(_COLUMNS), *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in table
    )


def write_summary_html(rows: Sequence[Mapping[str, Any]], directory: str | Path) -> Path:
    """Write ``<directory>/summary.html``: the summary with a link to each run's report."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _COLUMNS)
    body = []
    for row in rows:
        cells = [html.escape(c) for c in _cells(row)]
        if (Path(directory) / row["report"]).exists():
            cells[0] = f'<a href="{html.escape(row["report"])}">{cells[0]}</a>'
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    finished = sum(r["status"] == "finished" for r in rows)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>sbi-rounds campaign</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style></head>
<body><h1>Campaign: {len(rows)} observations, {finished} finished</h1>
<p>Posterior mean and sd of each observation's last finished round; the observation links
to its run's report.</p>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table></body></html>
"""
    path = Path(directory) / SUMMARY_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page)
    tmp.replace(path)
    return path
