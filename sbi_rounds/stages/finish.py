"""Finishing a round: its posterior summary and pairplot, and the mark that it is done."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbi_rounds.diagnostics.plots import save_pairplot
from sbi_rounds.lifecycle.run import Run, parameter_names
from sbi_rounds.lifecycle.stage import stage
from sbi_rounds.store import POSTERIOR_SAMPLES, PosteriorSummary, Stage
from sbi_rounds.store.schema import ParameterSummary

__all__ = ["Checkpointed", "checkpoint", "posterior_summary"]


@dataclass(frozen=True, kw_only=True)
class Checkpointed:
    """What the checkpoint stage wrote: the posterior ``summary`` per parameter and the
    ``pairplot`` PNG (None: not drawn)."""

    summary: Mapping[str, ParameterSummary]
    pairplot: Path | None


def posterior_summary(samples: np.ndarray, names: Sequence[str]) -> dict[str, ParameterSummary]:
    """Mean, standard deviation and 5/50/95% quantiles per parameter of ``samples (S, D)``."""
    q = np.quantile(samples, [0.05, 0.5, 0.95], axis=0)
    return {
        name: ParameterSummary(
            mean=float(samples[:, i].mean()),
            std=float(samples[:, i].std(ddof=1)),
            q05=float(q[0, i]),
            median=float(q[1, i]),
            q95=float(q[2, i]),
        )
        for i, name in enumerate(names)
    }


@stage("checkpoint", Stage.DONE)
def checkpoint(run: Run, round_: int, *, pairplot: bool = True) -> Checkpointed:
    """Finish the round: posterior summary, pairplot PNG, timings, and the DONE mark."""
    store = run.store
    samples = store.read_samples(round_)
    names = parameter_names(run)
    summary = posterior_summary(samples, names)
    figure = None
    if pairplot:
        figure = save_pairplot(
            samples,
            names,
            run.layout.figure(f"round_{round_:03d}_pairplot.png"),
            limits=_prior_limits(run),
            points=run.config.diagnostics.true_parameters,
            title=f"round {round_}",
        )
    store.write_posterior_summary(
        round_,
        PosteriorSummary(
            parameters=summary, pairplot=None if figure is None else run.layout.relative(figure)
        ),
        seal_datasets=POSTERIOR_SAMPLES,
    )
    return Checkpointed(summary=summary, pairplot=figure)


def _prior_limits(run: Run) -> list[tuple[float, float]] | None:
    p = run.config.prior
    if p.low is not None and p.high is not None:
        return list(zip(p.low, p.high, strict=True))
    return None
