"""A first round whose training another run already did: adopted, not repeated.

A campaign's shared first round (``campaign.shared_first_round``) simulates round 1 once,
and every observation's run starts from those pairs (``start_from``) with the campaign's
settings and seed. Round 1 trains on prior draws, whatever the observation, so each run's
own round-1 training would repeat the shared run's bit for bit. When the source run's
round 1 is trained, its rows are exactly this run's round 1 and every setting that shapes
training is the same, the train stage copies the source's attempts, network, history and
summary in one commit (:func:`adopt_training`) instead of training again. Anything that
differs (another seed, network, training setting or simulator; a source not trained yet)
makes the round train as usual, to the same result.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from sbi_rounds.lifecycle.run import Run
from sbi_rounds.store import RunFileError, RunStore, Stage, TrainedNetwork

__all__ = ["NOT_TRAINING", "adopt_training", "adoptable_source"]

log = logging.getLogger(__name__)

#: Settings that do not shape round 1's training: what the run observes and names, where it
#: lives, its later rounds, its posterior, checks, cluster and display. Every other setting
#: (a new one too) must be equal for a training to be adopted.
NOT_TRAINING = frozenset(
    {
        "xobs",
        "x_names",
        "parameter_names",
        "rounds",
        "simulations_per_round",
        "start_from",
        "posterior",
        "cluster",
        "continuation",
        "logger",
        "console",
        "diagnostics",
        "run_dir",
        "run_id",
    }
)


def _training_settings(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in NOT_TRAINING}


def adoptable_source(run: Run, round_: int) -> RunStore | None:
    """The run file whose round-1 training this run's round ``round_`` can adopt, or None.

    That is: round 1 of a run started from round 1 of another run's file
    (``start_from.simulations``), whose training is committed, whose settings equal this
    run's in everything that shapes training (all but :data:`NOT_TRAINING`), and whose
    parameters, simulations and validity equal this run's round 1.
    """
    start = run.config.start_from
    if round_ != 1 or start is None or start.round != 1:
        return None
    if Path(start.simulations).suffix.lower() == ".npz":
        return None
    try:
        source = RunStore.open(start.simulations, durable=False)
        if 1 not in source.rounds() or source.stage(1) < Stage.TRAINED:
            return None
        if not source.training_attempts(1):
            return None
        ours = run.config.model_dump(mode="json")
        if _training_settings(source.read_config()) != _training_settings(ours):
            return None
        theirs, mine = source.read_simulations(1), run.store.read_simulations(1)
    except (RunFileError, OSError, KeyError, ValueError):  # not a run file, or not one we read
        return None
    if not all(np.array_equal(a, b) for a, b in zip(theirs, mine, strict=True)):
        return None
    return source


def adopt_training(run: Run, round_: int, source: RunStore) -> None:
    """Commit ``source``'s round-1 training attempts and kept network as round ``round_``'s
    (one commit: a run stopped during it trains or adopts again)."""
    weights, architecture = source.read_network(1)
    summary = source.training_summary(1)
    assert summary is not None  # committed with the source's network
    history = {k: v.tolist() for k, v in source.read_history(1).items()}
    network = TrainedNetwork(
        weights=weights, architecture=architecture, history=history, summary=summary
    )
    run.store.adopt_training(round_, source.training_attempts(1), network)
    log.info(
        "round %d: adopted the training of %s (the same rows, training settings and seed: "
        "training again would give the same network)",
        round_,
        source.path,
    )
