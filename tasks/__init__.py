"""Prefect tasks: thin wrappers over the library's stage functions, one per stage.

They may import Prefect and ``sbi_rounds``; never ``flows``, which composes them.
"""

from tasks.rounds import (
    STAGE_TASKS,
    append_simulations_task,
    build_posterior_task,
    checkpoint_task,
    sample_proposal_task,
    simulate_task,
    train_task,
)

__all__ = [
    "STAGE_TASKS",
    "append_simulations_task",
    "build_posterior_task",
    "checkpoint_task",
    "sample_proposal_task",
    "simulate_task",
    "train_task",
]
