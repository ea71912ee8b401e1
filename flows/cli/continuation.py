"""Continuing a run in a new batch job once the driver job reached its time limit.

A SLURM driver job (``deployments/hpc/sbi-rounds.sbatch``: ``#SBATCH --requeue`` and
``--signal=B:USR1@120``) receives SIGUSR1 two minutes before its time limit. The command
stops the run as for SIGTERM (everything finished is committed, the Dask cluster closed,
the run's lock released when the process ends), then requeues its own job with
``scontrol requeue``. SLURM starts the requeued job, with the same job id and
``SLURM_RESTART_COUNT`` one higher, only after this one has ended, so the continuation
never runs while this job still holds the run's lock; it resumes the run mid-round. A
plain ``scancel`` (SIGTERM) stops without continuing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from sbi_rounds.config import ContinuationConfig
from sbi_rounds.lifecycle.locking import RunLock, RunLockedError

__all__ = ["continuations_done", "continue_in_new_job", "wait_for_previous_job"]

#: How long a continuation waits for the previous job's lock before giving up (seconds).
LOCK_WAIT = 300.0


def continuations_done(environ: Mapping[str, str] | None = None) -> int:
    """How many times this SLURM job was requeued already (``SLURM_RESTART_COUNT``)."""
    environ = os.environ if environ is None else environ
    try:
        return int(environ.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


def continue_in_new_job(
    settings: ContinuationConfig, resume: str, environ: Mapping[str, str] | None = None
) -> bool:
    """Requeue this SLURM job to continue the run; True if it was requeued.

    Called after the run stopped at the time-limit signal and closed everything. Says on
    standard error what happens: the continuation's number, or why there is none (the
    maximum reached, not a SLURM job, ``scontrol`` refused) and the command to resume.

    Args:
        settings: The run's ``continuation`` settings (the maximum number).
        resume: The command that resumes the run, shown when nothing continues it.
        environ: The environment; default ``os.environ``.
    """
    environ = os.environ if environ is None else environ
    job = environ.get("SLURM_JOB_ID")
    done, limit = continuations_done(environ), settings.max_continuations
    if job is None:
        print(
            "The time-limit signal (SIGUSR1) came outside a SLURM job: nothing to requeue.",
            file=sys.stderr,
        )
        return False
    if done >= limit:
        print(
            f"SLURM job {job} reached its time limit after {done} continuation(s), the "
            f"maximum (continuation.max_continuations={limit}); submit it again to resume:"
            f"\n  {resume}",
            file=sys.stderr,
            flush=True,
        )
        return False
    # scontrol requeue ends this job (SIGTERM to its processes): ours has finished already.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if out.returncode != 0:
        print(
            f"could not requeue SLURM job {job} ({(out.stderr or out.stdout).strip()}); "
            f"does the job have #SBATCH --requeue? Resume with:\n  {resume}",
            file=sys.stderr,
            flush=True,
        )
        return False
    print(
        f"SLURM job {job} reached its time limit: requeued to continue the run "
        f"(continuation {done + 1} of at most {limit}).",
        file=sys.stderr,
        flush=True,
    )
    return True


def wait_for_previous_job(
    run_paths: list[Path], environ: Mapping[str, str] | None = None, timeout: float = LOCK_WAIT
) -> None:
    """In a continuation, wait until no process holds the runs' locks any more.

    SLURM starts a requeued job only after the previous one ended, so its locks are free;
    this guards against a previous driver still exiting on a file system that releases
    locks late. Returns at once outside a continuation; after ``timeout`` seconds the
    run's own check reports the holder.
    """
    if continuations_done(environ) == 0:
        return
    deadline = time.monotonic() + timeout
    for path in run_paths:
        lock = RunLock(path.parent / "run.lock")
        while time.monotonic() < deadline:
            try:
                lock.check()
                break
            except RunLockedError:
                time.sleep(2)
