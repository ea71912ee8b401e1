"""``ContinuationConfig``: how a driver job stopped at its batch time limit continues."""

from __future__ import annotations

from pydantic import BaseModel, Field

from sbi_rounds.strict import STRICT

__all__ = ["ContinuationConfig"]


class ContinuationConfig(BaseModel):
    """Continuing a run in a new batch job when the driver job reaches its time limit.

    A SLURM driver job submitted with ``#SBATCH --signal=B:USR1@120`` and ``--requeue``
    (``deployments/hpc/sbi-rounds.sbatch``) receives SIGUSR1 before its time limit: the run
    commits what is finished, stops, and requeues its own job (``scontrol requeue``), which
    resumes the run once this job has ended and released the run's lock.
    """

    model_config = STRICT

    max_continuations: int = Field(
        10,
        ge=0,
        le=1000,
        title="Maximum continuations",
        description="Times a SLURM driver job stopped by its time limit (SIGUSR1) requeues "
        "itself to continue the run; 0: never (the run stops and waits to be resubmitted).",
    )
