"""The per-round Prefect tasks and the report task. Each only calls its library function.

Results are neither cached nor persisted by Prefect: the run file is the source of truth,
and every stage skips what it finds committed there. Retries are set only where a failure
can be transient (a Dask connection, a shared file system) and never for errors that would
repeat (bad input, a simulator that raises: those have their own, counted retries).
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

from distributed.comm.core import CommClosedError
from prefect import Task, task
from prefect.cache_policies import NONE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from sbi_rounds import stages
from sbi_rounds.lifecycle.run import Run
from sbi_rounds.lifecycle.stage import StageResult
from sbi_rounds.stages.round import StageTable

__all__ = [
    "STAGE_TASKS",
    "append_simulations_task",
    "build_posterior_task",
    "checkpoint_task",
    "diagnose_task",
    "report_task",
    "sample_proposal_task",
    "simulate_task",
    "train_task",
]

_NO_CACHE: dict[str, Any] = {"cache_policy": NONE, "persist_result": False}


_TRANSIENT_ERRNOS = frozenset(
    {
        errno.EAGAIN,
        errno.EBUSY,
        errno.EINTR,
        errno.EIO,
        errno.ESTALE,
        errno.ETIMEDOUT,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ECONNREFUSED,
    }
)


def _transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry only connection and file-system hiccups, never deterministic errors."""
    try:
        state.result()
    except (ConnectionError, TimeoutError, BlockingIOError, CommClosedError):
        return True
    except OSError as e:  # a stale NFS handle, a busy file; not ENOSPC, EROFS or h5py's
        return e.errno in _TRANSIENT_ERRNOS  # errno-less errors (a corrupt file)
    except BaseException:  # noqa: BLE001 - anything else would fail the same way again
        return False
    return False


@task(name="sample-proposal", task_run_name="sample-proposal-r{round_}", **_NO_CACHE)
def sample_proposal_task(run: Run, round_: int) -> StageResult[stages.ProposalSampled]:
    """Draw the round's parameters from its proposal (prior, posterior, truncated prior)."""
    return stages.sample_proposal(run, round_)


@task(
    name="simulate",
    task_run_name="simulate-r{round_}",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_transient,
    **_NO_CACHE,
)
def simulate_task(
    run: Run, round_: int, client: Any, progress: Any = None, should_stop: Any = None
) -> StageResult[stages.Simulated]:
    """Simulate the round's uncommitted chunks on Dask."""
    return stages.simulate(run, round_, client, progress=progress, should_stop=should_stop)


@task(name="append-simulations", task_run_name="append-simulations-r{round_}", **_NO_CACHE)
def append_simulations_task(run: Run, round_: int) -> StageResult[stages.Appended]:
    """Count valid simulations and add the round to the training data."""
    return stages.append_simulations(run, round_)


@task(name="train", task_run_name="train-r{round_}", **_NO_CACHE)
def train_task(run: Run, round_: int, callbacks: Any = ()) -> StageResult[stages.Trained]:
    """Train the network through the unified runner (resumes from its checkpoint)."""
    return stages.train(run, round_, callbacks=callbacks)


@task(name="build-posterior", task_run_name="build-posterior-r{round_}", **_NO_CACHE)
def build_posterior_task(run: Run, round_: int) -> StageResult[stages.PosteriorSampled]:
    """Build the posterior at xobs and commit its samples."""
    return stages.build_posterior(run, round_)


@task(
    name="checkpoint",
    task_run_name="checkpoint-r{round_}",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=_transient,
    **_NO_CACHE,
)
def checkpoint_task(
    run: Run, round_: int, pairplot: bool = True
) -> StageResult[stages.Checkpointed]:
    """Write the round's summary and pairplot and mark it done."""
    return stages.checkpoint(run, round_, pairplot=pairplot)


#: The round's stages as Prefect tasks, for ``run_round(..., table=STAGE_TASKS)``.
STAGE_TASKS = StageTable(
    sample=sample_proposal_task,
    simulate=simulate_task,
    append=append_simulations_task,
    train=train_task,
    posterior=build_posterior_task,
    checkpoint=checkpoint_task,
)


@task(
    name="diagnose",
    task_run_name="diagnose-r{round_}",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_transient,
    **_NO_CACHE,
)
def diagnose_task(
    run: Run, round_: int, client: Any = None, should_stop: Any = None, progress: Any = None
) -> StageResult[stages.Diagnosed]:
    """Check the finished round: summary with MAP, predictive check, movement, C2ST, calibration.

    ``client`` may be a function returning the Dask client: it is called only when check
    simulations are due.
    """
    return stages.diagnose(run, round_, client, should_stop=should_stop, progress=progress)


@task(name="report", task_run_name="report", **_NO_CACHE)
def report_task(run_path: str | Path, output: str | Path | None = None) -> Path:
    """Write the run's self-contained HTML report (``<run dir>/report/report.html`` by default)."""
    from sbi_rounds.report.document import write_report

    return write_report(run_path, output)
