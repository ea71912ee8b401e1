"""Using a finished (or interrupted) run: its posterior as an sbi object, and its table."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from sbi_rounds.config import RunConfig
from sbi_rounds.errors import LeakageWarning
from sbi_rounds.methods.leakage import LEAKY_FRACTION, loading_warning
from sbi_rounds.run import Run, posterior_for_round, resolve_run
from sbi_rounds.store import RunStore, Stage
from sbi_rounds.table import round_table

__all__ = ["load_posterior", "load_run", "table", "trained_rounds"]


def load_run(path: str | Path) -> Run:
    """Open a run file read-only (no lock needed) with its stored settings.

    Args:
        path: The run's ``run.h5`` or its directory.
    """
    p = Path(path)
    store = RunStore.open(p / "run.h5" if p.is_dir() else p)
    return resolve_run(RunConfig(**store.read_config()), store)


def trained_rounds(run: Run) -> list[int]:
    """Rounds whose network was committed, ascending."""
    return [r for r in run.store.rounds() if run.store.stage(r) >= Stage.TRAINED]


def load_posterior(path: str | Path, round: int = -1) -> Any:
    """The posterior of a run's round as an sbi posterior object, with ``xobs`` as default x.

    Args:
        path: The run's ``run.h5`` or its directory.
        round: 1-based round, or a negative index into the trained rounds (-1: the last).

    Returns:
        An sbi ``DirectPosterior`` (SNPE, TSNPE) or ``MCMCPosterior`` (SNLE, SNRE, or as
        configured) with ``sample``, ``log_prob`` and ``map``.

    Raises:
        DamagedRunError: The round's network weights are damaged (the message says so).

    Warns:
        LeakageWarning: The round's posterior (SNPE, TSNPE) puts less than 10% of its mass
            inside the prior, as its run measured: sbi's rejection makes ``sample`` slow.
            The warning says how slow for 10,000 samples and how to bound it.

    Example:
        >>> posterior = load_posterior("runs/snpe-1a2b3c4d5e/run.h5", round=-1)
        >>> samples = posterior.sample((1000,))
    """
    run = load_run(path)
    rounds = trained_rounds(run)
    if not rounds:
        raise ValueError(f"{run.store.path} has no trained round yet")
    if round < 0:
        if -round > len(rounds):
            raise ValueError(f"round={round}: the run has {len(rounds)} trained round(s)")
        round = rounds[round]
    elif round not in rounds:
        raise ValueError(f"round {round} has no trained network; trained rounds: {rounds}")
    run.store.check_intact(f"rounds/{round:04d}/network")  # DamagedRunError names damage
    posterior = posterior_for_round(run, round)
    _warn_if_leaking(run.store, round, [r for r in rounds if r < round])
    return posterior


#: The sample size a loading warning prices.
WARNING_SAMPLES = 10_000


def _warn_if_leaking(store: RunStore, round_: int, earlier: list[int]) -> None:
    mass = store.prior_mass(round_)
    if mass is None or mass.fraction >= LEAKY_FRACTION:
        return
    healthy = None
    for r in reversed(earlier):
        m = store.prior_mass(r)
        if m is not None and m.fraction >= LEAKY_FRACTION:
            healthy = (r, m)
            break
    message = loading_warning(mass, round_=round_, samples=WARNING_SAMPLES, earlier=healthy)
    warnings.warn(message, LeakageWarning, stacklevel=3)


def table(path: str | Path) -> list[dict[str, Any]]:
    """The per-round table of a run (see :func:`sbi_rounds.table.round_table`)."""
    return round_table(load_run(path).store)
