"""Figures of the posterior checks: pairplots, predictive checks, calibration, loss curves."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sbi_rounds.missing import valid_rows

__all__ = [
    "loss_curves_png",
    "save_calibration_plots",
    "save_pairplot",
    "save_predictive_plot",
]

#: Most statistics drawn in a predictive-check figure (flagged ones first).
MAX_PANELS = 16


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path, dpi: int = 90) -> Path:
    """Write ``fig`` to ``path`` atomically (a temporary file, then a rename) and close it."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    tmp.replace(path)
    return path


def save_pairplot(
    samples: np.ndarray,
    names: Sequence[str],
    path: str | Path,
    *,
    limits: Sequence[tuple[float, float]] | None = None,
    points: np.ndarray | Sequence[float] | None = None,
    title: str | None = None,
) -> Path:
    """Write sbi's pairplot of ``samples (S, D)`` to a PNG.

    Args:
        samples: Posterior samples, with shape ``(S, D)``.
        names: One label per parameter.
        path: Where the PNG goes (its folder is created).
        limits: ``(low, high)`` per parameter, e.g. the prior bounds.
        points: Parameters to mark, e.g. the true ones, with shape ``(D,)``.
        title: The figure's title.

    Returns:
        The PNG's path.
    """
    _pyplot()
    from sbi.analysis import pairplot

    kwargs: dict[str, Any] = {}
    if points is not None:
        kwargs["points"] = [np.asarray(points, dtype=np.float64).reshape(1, -1)]
        kwargs["fig_kwargs"] = {"points_colors": ["tab:red"]}
    fig, _ = pairplot(
        np.asarray(samples),
        limits=list(limits) if limits else None,
        labels=list(names),
        figsize=(2.2 * len(names) + 1, 2.2 * len(names) + 1),
        **kwargs,
    )
    if title:
        fig.suptitle(title + ("" if points is None else " (red: true parameters)"))
    return _save(fig, path)


def save_predictive_plot(
    x_predictive: np.ndarray,
    xobs: np.ndarray,
    check: Mapping[str, Any],
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Histograms of the posterior predictive simulations per statistic, with x_o marked.

    Flagged statistics (see ``checks.predictive_check``) are drawn first, in red; at most
    :data:`MAX_PANELS` statistics are drawn.

    Args:
        x_predictive: Simulations from posterior samples, with shape ``(N, K)``.
        xobs: The observation, with shape ``(K,)``.
        check: The ``predictive_check`` result of these simulations.
        path: Where the PNG goes.
        title: The figure's title.

    Returns:
        The PNG's path.
    """
    plt = _pyplot()
    x = np.asarray(x_predictive, dtype=np.float64)
    x = x[valid_rows(x)]
    xobs = np.asarray(xobs, dtype=np.float64).reshape(-1)
    names = list(check["statistics"]) or [f"x_{k + 1}" for k in range(len(xobs))]
    flagged = set(check.get("flagged", ()))
    order = sorted(range(len(names)), key=lambda k: (names[k] not in flagged, k))[:MAX_PANELS]
    cols = min(4, len(order))
    rows = math.ceil(len(order) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(order) :]:
        ax.axis("off")
    for ax, k in zip(axes.flat, order, strict=False):
        name = names[k]
        stats = check["statistics"].get(name, {})
        bad = name in flagged
        if len(x):
            ax.hist(x[:, k], bins=30, color="tab:red" if bad else "tab:blue", alpha=0.6)
        ax.axvline(xobs[k], color="black", lw=2, label="x_o")
        q = stats.get("quantile")
        label = f"{name}: q={q:.3f}" if q is not None else name
        ax.set_title(
            label + (" FLAGGED" if bad else ""), color="tab:red" if bad else "black", fontsize=9
        )
        ax.set_yticks([])
    shown = "" if len(order) == len(names) else f" ({len(order)} of {len(names)} statistics)"
    fig.suptitle((title or "Posterior predictive check") + shown)
    fig.tight_layout()
    return _save(fig, path)


def save_calibration_plots(
    ranks: np.ndarray,
    num_posterior_samples: int,
    names: Sequence[str],
    directory: str | Path,
    *,
    prefix: str = "calibration",
) -> dict[str, Path]:
    """sbi's SBC rank plots: histograms of the marginal ranks, and rank CDFs with coverage.

    Args:
        ranks: Ranks from ``calibration.calibrate``, with shape ``(N, D + 1)``: the ``D``
            marginal ranks, then the density ranks (expected coverage).
        num_posterior_samples: Posterior samples per test simulation.
        names: One name per parameter.
        directory: Where the PNGs go.
        prefix: File name prefix.

    Returns:
        ``{"ranks": <prefix>_ranks.png, "coverage": <prefix>_coverage.png}``.
    """
    _pyplot()
    from sbi.analysis import sbc_rank_plot

    directory = Path(directory)
    ranks = np.asarray(ranks)
    dim = len(names)
    bins = int(min(20, max(5, len(ranks) // 10)))
    fig, _ = sbc_rank_plot(
        ranks[:, :dim],
        num_posterior_samples,
        num_bins=bins,
        plot_type="hist",
        parameter_labels=list(names),
        ranks_labels=["ranks"],
        figsize=(3.2 * min(dim, 4), 2.8 * math.ceil(dim / 4)),
    )
    fig.suptitle(f"SBC ranks of {len(ranks)} test simulations (grey: 99% band if uniform)")
    hist = _save(fig, directory / f"{prefix}_ranks.png")
    fig, ax = sbc_rank_plot(
        ranks,
        num_posterior_samples,
        num_bins=int(min(50, max(10, len(ranks) // 2))),
        plot_type="cdf",
        parameter_labels=[*names, "expected coverage (density ranks)"],
        figsize=(6, 5),
    )
    ax.set_title("Rank CDFs; on the diagonal (grey band) when calibrated", fontsize=10)
    cdf = _save(fig, directory / f"{prefix}_coverage.png")
    return {"ranks": hist, "coverage": cdf}


def loss_curves_png(histories: Mapping[int, Mapping[str, Sequence[float]]]) -> bytes | None:
    """PNG bytes of the training and validation losses per epoch, round after round.

    Args:
        histories: ``{round: {"train_loss": [...], "val_loss": [...]}}``.

    Returns:
        The PNG, or None when no round has a history.
    """
    plt = _pyplot()
    rounds = [r for r in sorted(histories) if len(histories[r].get("val_loss", ())) > 0]
    if not rounds:
        return None
    fig, axes = plt.subplots(
        1, len(rounds), figsize=(3.4 * len(rounds) + 0.6, 3.0), squeeze=False, sharey=False
    )
    for ax, r in zip(axes.flat, rounds, strict=True):
        h = histories[r]
        for key, label, style in (("train_loss", "train", "-"), ("val_loss", "validation", "-")):
            values = np.asarray(h.get(key, ()), dtype=np.float64)
            if len(values):
                ax.plot(np.arange(1, len(values) + 1), values, style, label=label)
        ax.set_title(f"round {r}", fontsize=10)
        ax.set_xlabel("epoch")
    axes.flat[0].set_ylabel("loss")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buffer.getvalue()
