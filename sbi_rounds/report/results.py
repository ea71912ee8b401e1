"""Using a finished (or interrupted) run: its posterior as an sbi object, and its table.

Opening a run never runs code it names: the prior is built from stored data (a box's
bounds; for a prior that is code, the prior draws the run stored), and user code (a prior
factory, an embedding network; not this package's own examples) is imported only when the
caller asks for it with ``import_code=True``, after a prior factory's code is checked
against the fingerprint the run recorded (``sbi_rounds.lifecycle.fingerprint.check_prior_code``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from sbi_rounds.builders.priors import StoredPrior, build_prior
from sbi_rounds.config import RunConfig
from sbi_rounds.errors import LeakageWarning
from sbi_rounds.lifecycle.fingerprint import check_prior_code
from sbi_rounds.lifecycle.run import Run, posterior_for_round, resolve_run
from sbi_rounds.methods.leakage import LEAKY_FRACTION, loading_warning
from sbi_rounds.report.table import RoundRow, round_table
from sbi_rounds.store import DamagedRunError, RunStore, Stage
from sbi_rounds.store.checksums import SETTINGS_PATH

__all__ = ["load_posterior", "load_run", "table", "trained_rounds"]


def load_run(path: str | Path, *, import_code: bool = False) -> Run:
    """Open a run file read-only (no lock needed) with its stored settings.

    Args:
        path: The run's ``run.h5`` or its directory.
        import_code: Import and call the run's prior factory, if it has one, after
            checking its code against the fingerprint the run recorded. Otherwise such a
            prior is a :class:`~sbi_rounds.builders.priors.StoredPrior` (the stored prior draws),
            and no code the run names is imported.

    Raises:
        DamagedRunError: The stored settings are damaged or were edited outside sbi-rounds.
        CodeChangedError: ``import_code``, and the prior's code is not the recorded one.
    """
    p = Path(path)
    store = RunStore.open(p / "run.h5" if p.is_dir() else p)
    store.check_intact(SETTINGS_PATH)  # an edited setting is never acted on
    config = RunConfig(**store.read_config())
    if config.prior.path is None or _ours(config.prior.path):
        prior = build_prior(config.prior)  # a box (its bounds), or this package's own code
    elif import_code:
        check_prior_code(config.prior, store.code_fingerprint(), str(store.path))
        prior = build_prior(config.prior)
    else:
        prior = StoredPrior(_prior_draws(store), config.prior.path)
    return resolve_run(config, store, prior)


def _ours(path: str) -> bool:
    """Whether ``module:function`` is this package's own code (its examples), not user code:
    imported without being asked, as this package is."""
    return path.startswith("sbi_rounds.")


def _prior_draws(store: RunStore) -> torch.Tensor | None:
    """Round 1's parameters, drawn from the prior (None: not drawn yet, or unreadable)."""
    if 1 not in store.rounds() or store.round_info(1).proposal.get("kind") != "prior":
        return None
    try:
        theta = store.read_theta(1)[: store.round_info(1).theta_done]
    except DamagedRunError:
        return None
    return torch.from_numpy(theta).float() if len(theta) else None


def trained_rounds(run: Run) -> list[int]:
    """Rounds whose network was committed, ascending."""
    return [r for r in run.store.rounds() if run.store.stage(r) >= Stage.TRAINED]


def load_posterior(path: str | Path, round: int = -1, *, import_code: bool = False) -> Any:
    """The posterior of a run's round as an sbi posterior object, with ``xobs`` as default x.

    Args:
        path: The run's ``run.h5`` or its directory.
        round: 1-based round, or a negative index into the trained rounds (-1: the last).
        import_code: Import and call the user code the posterior needs (a prior factory,
            an embedding network); a prior factory's code is checked against the
            fingerprint the run recorded first. Without it, a run whose posterior needs
            such code is refused (opening a run never runs code it names).

    Returns:
        An sbi ``DirectPosterior`` (SNPE, TSNPE) or ``MCMCPosterior`` (SNLE, SNRE, or as
        configured) with ``sample``, ``log_prob`` and ``map``.

    Raises:
        DamagedRunError: What the posterior is built from is damaged (the round's network
            weights, round 1's simulations, a missing or truncated round file, the stored
            settings); the message names it and the file.
        RunFileError: Round 1's simulations were left out by a repair and not simulated
            again yet.
        ValueError: The posterior needs user code and ``import_code`` is not set.
        CodeChangedError: ``import_code``, and the prior's code is not the recorded one.

    Warns:
        LeakageWarning: The round's posterior (SNPE, TSNPE) puts less than 10% of its mass
            inside the prior, as its run measured: sbi's rejection makes ``sample`` slow.
            The warning says how slow for 10,000 samples and how to bound it.

    Examples:
        >>> posterior = load_posterior("runs/snpe-1a2b3c4d5e/run.h5", round=-1)
        >>> samples = posterior.sample((1000,))
    """
    run = load_run(path, import_code=import_code)
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
    for name in ("theta", "x", "valid"):  # what the network is rebuilt from
        run.store.check_intact(f"/rounds/0001/{name}")
    if isinstance(run.prior, StoredPrior):
        raise run.prior.needs_code()
    embedding = run.store.read_network(round)[1].embedding_net
    if embedding is not None and not import_code and not _ours(embedding):
        raise ValueError(
            f"round {round}'s network has an embedding network that is code ({embedding}), "
            "and opening a run does not run code it names: pass import_code=True to "
            "import and call it"
        )
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


def table(path: str | Path) -> list[RoundRow]:
    """The per-round table of a run, one typed row per round (see
    :class:`sbi_rounds.report.table.RoundRow`; ``row.model_dump()`` gives a dict)."""
    return round_table(load_run(path).store)
