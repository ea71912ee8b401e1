"""Posterior diagnostics: pairplots and summaries of how the posterior moves between rounds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["save_pairplot"]


def save_pairplot(
    samples: np.ndarray,
    names: Sequence[str],
    path: str | Path,
    *,
    limits: Sequence[tuple[float, float]] | None = None,
    points: np.ndarray | None = None,
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
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from sbi.analysis import pairplot

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {}
    if points is not None:
        kwargs["points"] = [np.asarray(points).reshape(1, -1)]
    fig, _ = pairplot(
        np.asarray(samples),
        limits=list(limits) if limits else None,
        labels=list(names),
        figsize=(2.2 * len(names) + 1, 2.2 * len(names) + 1),
        **kwargs,
    )
    if title:
        fig.suptitle(title)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path
