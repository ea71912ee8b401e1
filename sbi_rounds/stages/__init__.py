"""The per-round stages. Each reads the store, skips what is done and commits its result.

A round runs ``sample_proposal -> simulate -> append_simulations -> train ->
build_posterior -> checkpoint`` (:func:`sbi_rounds.stages.round.run_round` chains them), then
``diagnose`` checks the finished round (see ``sbi_rounds.diagnostics``). Every stage is
idempotent and usable without Prefect; ``tasks/`` wraps them as Prefect tasks and
``flows/online.py`` runs the rounds.

The names a run needs around its stages are re-exported here (the session, the resolved
run, the round table), so ``from sbi_rounds import stages`` is the one import for scripts.
This is the library's top with ``campaign``: it may import every other package.
"""

from sbi_rounds.diagnostics.stage import Diagnosed, diagnose
from sbi_rounds.errors import ConfigMismatchError, InvalidRoundError, RunInterrupted
from sbi_rounds.lifecycle.preflight import preflight
from sbi_rounds.lifecycle.run import Run, network_for_round, parameter_names, posterior_for_round
from sbi_rounds.lifecycle.session import open_run, run_session
from sbi_rounds.lifecycle.stage import StageResult
from sbi_rounds.report.table import format_round_table, round_table
from sbi_rounds.stages.finish import Checkpointed, checkpoint, posterior_summary
from sbi_rounds.stages.sampling import (
    PosteriorSampled,
    ProposalSampled,
    build_posterior,
    sample_proposal,
)
from sbi_rounds.stages.simulate import Appended, Simulated, append_simulations, simulate
from sbi_rounds.stages.train import Trained, train

__all__ = [
    "Appended",
    "Checkpointed",
    "ConfigMismatchError",
    "Diagnosed",
    "InvalidRoundError",
    "PosteriorSampled",
    "ProposalSampled",
    "Run",
    "RunInterrupted",
    "Simulated",
    "StageResult",
    "Trained",
    "append_simulations",
    "build_posterior",
    "checkpoint",
    "diagnose",
    "format_round_table",
    "network_for_round",
    "open_run",
    "parameter_names",
    "posterior_for_round",
    "posterior_summary",
    "preflight",
    "round_table",
    "run_session",
    "sample_proposal",
    "simulate",
    "train",
]
