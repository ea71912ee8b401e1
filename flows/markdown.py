"""The markdown of a run's Prefect artifacts: round table rows, posterior and checks."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sbi_rounds.missing import is_missing
from sbi_rounds.report.table import RoundRow, shown_columns
from sbi_rounds.store import Calibration, RoundDiagnostics
from sbi_rounds.store.schema import Movement, ParameterSummary, PredictiveCheck

__all__ = [
    "MAX_EMBEDDED_IMAGE_BYTES",
    "checks_markdown",
    "png_data_uri",
    "posterior_markdown",
    "round_table_artifact_rows",
]

#: Largest PNG embedded in a markdown artifact (its base64 text is a third larger).
MAX_EMBEDDED_IMAGE_BYTES = 4_000_000


def _clean(value: Any, digits: int = 4) -> Any:
    """JSON-friendly cell: None for missing (NaN, -1 counts), floats rounded."""
    if is_missing(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return None if value == -1 else value
    if isinstance(value, float):
        return round(value, digits)
    return value


def round_table_artifact_rows(rows: Sequence[RoundRow]) -> list[dict[str, Any]]:
    """The rows of ``stages.round_table`` with readable column names and clean values.

    Args:
        rows: One row per round.

    Returns:
        One dict per round: the columns of ``sbi_rounds.report.table.shown_columns`` by title;
        unknown values are None.
    """
    columns = shown_columns(list(rows))
    return [{c.title: _clean(c.value(row)) for c in columns} for row in rows]


def png_data_uri(path: str | Path, max_bytes: int = MAX_EMBEDDED_IMAGE_BYTES) -> str | None:
    """``data:image/png;base64,...`` of a PNG file, or None when it is larger than ``max_bytes``."""
    data = Path(path).read_bytes()
    if len(data) > max_bytes:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _embedded(path: Path, alt: str, max_bytes: int) -> str:
    """A markdown image of a PNG as a ``data:`` URI, or its path when too large."""
    uri = png_data_uri(path, max_bytes)
    if uri is None:
        size = path.stat().st_size / 1e6
        return f"{alt} ({size:.1f} MB) is too large to embed; it is at `{path}`."
    return f"![{alt}]({uri})"


def checks_markdown(
    round_: int,
    diagnostics: RoundDiagnostics | None,
    calibration: Calibration | None,
    directory: str | Path,
    max_image_bytes: int = MAX_EMBEDDED_IMAGE_BYTES,
) -> list[str]:
    """Markdown lines of a round's posterior checks (``sbi_rounds.diagnostics``).

    Args:
        round_: The round (1-based).
        diagnostics: The round's checks (``predictive``, ``movement``, ``c2st`` are
            shown); None when the round was not checked.
        calibration: Round 1's calibration, or None.
        directory: The run's directory, where the checks' figures are.
        max_image_bytes: Larger figures are named by their path instead of embedded.

    Returns:
        Lines of markdown (empty when there is nothing to show).
    """
    directory = Path(directory)
    diagnostics = diagnostics or RoundDiagnostics()
    lines = _movement_lines(round_, diagnostics.movement)
    if diagnostics.c2st is not None:
        accuracy = diagnostics.c2st.accuracy
        lines += [
            f"**C2ST against the reference samples:** {accuracy:.3f} (0.5: indistinguishable).",
            "",
        ]
    if diagnostics.predictive is not None:
        lines += _predictive_lines(round_, diagnostics.predictive, directory, max_image_bytes)
    if calibration is not None:
        lines += _calibration_lines(calibration, directory, max_image_bytes)
    return lines


def _movement_lines(round_: int, move: Movement | None) -> list[str]:
    if move is None:
        return []
    change = move.max_width_change
    return [
        f"**Change from round {round_ - 1}:** largest mean shift "
        f"{_number(move.max_mean_shift)} sd, largest width change "
        f"{'-' if change is None else f'{change:.1%}'}.",
        "",
    ]


def _predictive_lines(
    round_: int, check: PredictiveCheck, directory: Path, max_image_bytes: int
) -> list[str]:
    flagged = check.flagged
    lines = [
        "## Posterior predictive check",
        "",
        f"{check.valid} valid of {check.simulations} simulations from posterior "
        f"samples. "
        + (
            f"**Flagged (not reproduced): {', '.join(flagged)}.**"
            if flagged
            else "No statistic flagged."
        ),
        "",
        "| statistic | x_o | mean | sd | quantile of x_o | z | flagged |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, st in check.statistics.items():
        cells = (st.xobs, st.mean, st.std, st.quantile, st.z)
        lines.append(
            f"| {name} | "
            + " | ".join(_number(c) for c in cells)
            + f" | {'yes' if st.flagged else 'no'} |"
        )
    lines.append("")
    if check.figure and (directory / check.figure).is_file():
        alt = f"Posterior predictive check of round {round_}"
        lines += [_embedded(directory / check.figure, alt, max_image_bytes), ""]
    return lines


def _calibration_lines(
    calibration: Calibration, directory: Path, max_image_bytes: int
) -> list[str]:
    cov = dict(zip(calibration.coverage.levels, calibration.coverage.values, strict=True))
    lines = [
        "## Calibration of round 1",
        "",
        f"{calibration.valid} test simulations from the prior, "
        f"{calibration.posterior_samples} posterior samples each. Expected coverage at "
        f"50% / 90% / 95%: {cov.get(0.5, math.nan):.2f} / {cov.get(0.9, math.nan):.2f} / "
        f"{cov.get(0.95, math.nan):.2f}.",
        "",
    ]
    classified = calibration.classified
    if classified:
        lines += ["| parameter | KS p-value | C2ST ranks | C2ST prior vs DAP |"]
        lines += ["| --- | ---: | ---: | ---: |"]
    else:
        lines += ["| parameter | KS p-value (ranks uniform) |", "| --- | ---: |"]
    for name, p in calibration.parameters.items():
        classifier_cells = (
            f" {_number(p.c2st_ranks)} | {_number(p.c2st_dap)} |" if classified else ""
        )
        lines.append(f"| {name} | {_number(p.ks_p_value)} |{classifier_cells}")
    lines.append("")
    figure = calibration.figures.get("coverage")
    if figure and (directory / figure).is_file():
        alt = "SBC rank CDFs and expected coverage"
        lines += [_embedded(directory / figure, alt, max_image_bytes), ""]
    return lines


def posterior_markdown(
    *,
    run_id: str,
    round_: int,
    rounds: int,
    summary: Mapping[str, ParameterSummary],
    xobs: Sequence[float],
    row: RoundRow,
    pairplot: str | Path | None,
    run_file: str | Path,
    max_image_bytes: int = MAX_EMBEDDED_IMAGE_BYTES,
    diagnostics: RoundDiagnostics | None = None,
    calibration: Calibration | None = None,
    warnings: Sequence[str] = (),
) -> str:
    """The markdown of one round's posterior: warnings, summary table, pairplot, checks.

    Args:
        run_id: The run's id.
        round_: The round (1-based).
        rounds: The number of rounds the run was asked for.
        summary: The posterior summary per parameter (``RunStore.posterior_summary``).
        xobs: The observation, with shape ``(K,)``.
        row: The round's ``stages.round_table`` row.
        pairplot: The pairplot PNG, embedded as a ``data:`` URI so that it renders without
            an external URL; None when there is none.
        run_file: The run file's path.
        max_image_bytes: A larger pairplot is named by its path instead of embedded.
        diagnostics: The round's checks (MAP in ``posterior``, the predictive check,
            movement, C2ST; ``RunStore.diagnostics``); None: no checks shown.
        calibration: Round 1's calibration, or None.
        warnings: The round's warnings (``sbi_rounds.diagnostics.round_alerts``).

    Returns:
        Markdown text.
    """
    loss, stop = row.best_val_loss, f" (stopped by {row.stop})" if row.stop else ""
    lines = [
        f"# Posterior after round {round_} of {rounds}",
        "",
        f"Run `{run_id}` at x_o = [{', '.join(_number(v) for v in xobs)}]: "
        f"{_clean(row.valid)} valid of {_clean(row.simulations)} simulations, "
        f"{_clean(row.epochs)} epochs{stop}, best validation loss "
        f"{'-' if loss is None or loss != loss else _number(loss)}.",
        "",
        *[f"> **Warning:** {w}\n" for w in warnings],
    ]
    full = (diagnostics.posterior if diagnostics is not None else None) or {}
    with_map = bool(full) and all(name in full and full[name].map is not None for name in summary)
    if with_map:
        lines += [
            "| parameter | mean | std | 5% | median | 95% | MAP |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
    else:
        lines += [
            "| parameter | mean | std | 5% | median | 95% |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
    for name, s in summary.items():
        cells = [s.mean, s.std, s.q05, s.median, s.q95]
        if with_map:
            cells.append(full[name].map)
        lines.append(f"| {name} | " + " | ".join(_number(c) for c in cells) + " |")
    lines.append("")
    if pairplot is not None:
        uri = png_data_uri(pairplot, max_image_bytes)
        if uri is None:
            lines.append(
                f"The pairplot ({Path(pairplot).stat().st_size / 1e6:.1f} MB) is too large to "
                f"embed; it is at `{pairplot}`."
            )
        else:
            lines.append(f"![Pairplot of the round {round_} posterior]({uri})")
        lines.append("")
    directory = Path(run_file).parent  # the checks' figures are named relative to it
    lines += checks_markdown(round_, diagnostics, calibration, directory, max_image_bytes)
    lines.append(f"Run file: `{run_file}`")
    return "\n".join(lines)
