"""One round as a library call: the stage table, and ``run_round`` that runs it in order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from sbi_rounds.lifecycle.run import Run
from sbi_rounds.lifecycle.stage import StageResult
from sbi_rounds.runtime.cancel import CancelToken
from sbi_rounds.runtime.concurrency import DRIVER
from sbi_rounds.simulation.imported import is_imported
from sbi_rounds.stages import (
    Appended,
    Checkpointed,
    PosteriorSampled,
    ProposalSampled,
    Simulated,
    Trained,
    append_simulations,
    build_posterior,
    checkpoint,
    sample_proposal,
    simulate,
    train,
)
from sbi_rounds.store import Stage
from sbi_rounds.training import Callback

__all__ = ["STAGES", "RoundResult", "StageTable", "run_round"]

ProgressFn = Callable[[int, int, float], None]
#: Called as ``progress(run, round_)`` right before a round simulates: a context manager
#: whose value is the ``progress(done, total, rate)`` callback (or None) of its simulation.
ProgressFactory = Callable[[Run, int], AbstractContextManager[ProgressFn | None]]


@dataclass(frozen=True)
class StageTable:
    """The six stages of a round, in order, as functions with the signatures of
    :mod:`sbi_rounds.stages` (``tasks.STAGE_TASKS`` holds them as Prefect tasks)."""

    sample: Callable[..., StageResult[ProposalSampled]] = sample_proposal
    simulate: Callable[..., StageResult[Simulated]] = simulate
    append: Callable[..., StageResult[Appended]] = append_simulations
    train: Callable[..., StageResult[Trained]] = train
    posterior: Callable[..., StageResult[PosteriorSampled]] = build_posterior
    checkpoint: Callable[..., StageResult[Checkpointed]] = checkpoint


#: The library's stages, called directly.
STAGES = StageTable()


@dataclass(frozen=True)
class RoundResult:
    """What the stages of one round did, by stage name (a stage the round skipped because
    its work was committed before is absent or ``skipped``)."""

    round: int
    stages: dict[str, StageResult[Any]]


def run_round(
    run: Run,
    round_: int,
    client: Any = None,
    *,
    token: CancelToken | None = None,
    callbacks: Sequence[Callback] = (),
    progress: ProgressFactory | None = None,
    pairplot: bool = True,
    table: StageTable = STAGES,
) -> RoundResult:
    """Run (or resume) one round: sample, simulate, append, train, build the posterior, finish.

    Each stage skips what the run file shows committed, so calling this again after any
    interruption continues the round; a finished round returns at once.

    Args:
        run: The open run (see :func:`sbi_rounds.lifecycle.session.run_session`).
        round_: The round, 1-based; the rounds before it must be finished.
        client: A ``distributed.Client``, or a function returning one, called only when
            the round still has simulations to run (so a finished round starts no cluster).
        token: Checked between stages, polled while simulating and at each epoch of
            training; once cancelled the round stops with ``RunInterrupted``.
        callbacks: Training callbacks (trackers, progress bars).
        progress: Makes the simulation's progress callback (see :data:`ProgressFactory`).
        pairplot: Draw the round's pairplot PNG.
        table: The stage functions (``tasks.STAGE_TASKS`` runs them as Prefect tasks).

    Returns:
        The stages' results.

    Examples:
        ```python
        with run_session(config) as run, open_client(config.cluster) as client:
            for r in range(1, config.rounds + 1):
                run_round(run, r, client)
        ```
    """
    token = token or CancelToken()
    done: dict[str, StageResult[Any]] = {}
    token.check(f"sampling the proposal of round {round_}")
    done["sample"] = table.sample(run, round_)
    if run.store.stage(round_) < Stage.SIMULATED:
        token.check(f"simulating of round {round_}")
        imported = is_imported(run.store.round_info(round_).proposal)  # no cluster needed
        with DRIVER.released():  # other runs of a campaign train meanwhile
            dask = client() if callable(client) and not imported else client
        with (
            progress(run, round_) if progress is not None else nullcontext() as report,
            DRIVER.released(),
        ):
            done["simulate"] = table.simulate(run, round_, dask, report, token.is_set)
    token.check(f"appending the simulations of round {round_}")
    done["append"] = table.append(run, round_)
    token.check(f"training of round {round_}")
    done["train"] = table.train(run, round_, [*callbacks, token.training_callback()])
    token.check(f"building the posterior of round {round_}")
    done["posterior"] = table.posterior(run, round_)
    done["checkpoint"] = table.checkpoint(run, round_, pairplot=pairplot)
    return RoundResult(round=round_, stages=done)
