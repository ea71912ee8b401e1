"""Figures that answer "what is my posterior": axes fitted to the samples, rounds overlaid.

The per-round pairplots keep the prior's box as axes (rounds compare at a glance); a
posterior with sd 0.1 in a box of width 4 is then a dot. These figures fit their axes to
the samples and draw the prior's bounds as dashed lines where they are in view.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["fitted_limits", "marginals_by_round_png", "posterior_pairplot_png"]

#: Central mass the fitted axes show, and the margin added on each side (fraction of range).
_SHOWN, _MARGIN = 0.99, 0.2


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def fitted_limits(
    samples: np.ndarray, prior: Sequence[tuple[float, float]] | None = None
) -> list[tuple[float, float]]:
    """Axis limits per parameter that fit ``samples (S, D)``: their central 99% with a 20%
    margin, clipped to the prior's bounds (``(low, high)`` per parameter) when given."""
    tail = (1 - _SHOWN) / 2
    lo, hi = np.quantile(samples, [tail, 1 - tail], axis=0)
    pad = np.maximum(hi - lo, 1e-9) * _MARGIN
    limits = []
    for i, (a, b) in enumerate(zip(lo - pad, hi + pad, strict=True)):
        if prior is not None:
            low, high = prior[i]
            a, b = max(a, low - (high - low) * 0.02), min(b, high + (high - low) * 0.02)
        limits.append((float(a), float(b)))
    return limits


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    finally:
        _pyplot().close(fig)
    return buf.getvalue()


def _prior_lines(ax: Any, low: float, high: float, vertical: bool = True) -> None:
    a, b = ax.get_xlim() if vertical else ax.get_ylim()
    for bound in (low, high):
        if a < bound < b:
            line = ax.axvline if vertical else ax.axhline
            line(bound, color="0.4", ls="--", lw=1)


def posterior_pairplot_png(
    samples: np.ndarray,
    names: Sequence[str],
    *,
    prior: Sequence[tuple[float, float]] | None = None,
    points: Sequence[float] | None = None,
) -> bytes:
    """sbi's pairplot of ``samples (S, D)`` with axes fitted to them and the prior's bounds
    dashed where they are in view; ``points`` (e.g. the true parameters) in red."""
    _pyplot()
    from sbi.analysis import pairplot

    kwargs: dict[str, Any] = {}
    if points is not None:
        kwargs["points"] = [np.asarray(points, dtype=np.float64).reshape(1, -1)]
        kwargs["fig_kwargs"] = {"points_colors": ["tab:red"]}
    d = len(names)
    fig, axes = pairplot(
        np.asarray(samples),
        limits=fitted_limits(samples, prior),
        labels=list(names),
        figsize=(2.6 * d + 1.5, 2.6 * d + 1.5),
        **kwargs,
    )
    axes = np.asarray(axes).reshape(d, d)
    if prior is not None:
        for i in range(d):
            for j in range(i, d):
                _prior_lines(axes[i, j], *prior[j])
                if j > i:
                    _prior_lines(axes[i, j], *prior[i], vertical=False)
    return _png(fig)


def marginals_by_round_png(
    samples: Mapping[int, np.ndarray],
    names: Sequence[str],
    *,
    prior: Sequence[tuple[float, float]] | None = None,
) -> bytes | None:
    """Every round's marginal of every parameter, overlaid (later rounds darker; the last
    one bold), axes fitted to the last two rounds. ``samples``: round -> ``(S, D)``."""
    if not samples:
        return None
    plt = _pyplot()
    rounds = sorted(samples)
    recent = np.concatenate([samples[r] for r in rounds[-2:]])
    limits = fitted_limits(recent, prior)
    d = len(names)
    cols = min(d, 4)
    rows = -(-d // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
    colors = plt.get_cmap("viridis")(np.linspace(0.9, 0.1, len(rounds)))
    for k, ax in enumerate(axes.flat):
        if k >= d:
            ax.set_visible(False)
            continue
        bins = np.linspace(*limits[k], 41)
        for r, color in zip(rounds, colors, strict=True):
            last = r == rounds[-1]
            ax.hist(
                np.clip(samples[r][:, k], bins[0], bins[-1]),
                bins=bins,
                density=True,
                histtype="step",
                color=color,
                lw=2.2 if last else 1.0,
                label=f"round {r}",
            )
        ax.set_xlim(*limits[k])
        if prior is not None:
            _prior_lines(ax, *prior[k])
        ax.set_xlabel(names[k])
        ax.set_yticks([])
    axes.flat[0].legend(fontsize=8, frameon=False)
    fig.suptitle("posterior marginals by round (dashed: prior bounds)")
    return _png(fig)
