"""Dask clusters for simulation: local subprocesses, an existing scheduler, or a batch system.

``python -m sbi_rounds.cluster RUN.yaml`` prints the batch script of a run config's worker
jobs (see :func:`sbi_rounds.cluster.jobqueue.main`).

It may import ``config`` and ``runtime`` (the watchdog); ``simulation`` builds on it.
"""

from sbi_rounds.cluster.connect import (
    BackgroundClient,
    ClusterError,
    expected_threads,
    open_client,
    total_threads,
)
from sbi_rounds.cluster.jobqueue import (
    JOBQUEUE_CLASSES,
    job_script,
    jobqueue_cluster,
    jobqueue_kwargs,
    lifetime_args,
    main,
    walltime_seconds,
)

__all__ = [
    "JOBQUEUE_CLASSES",
    "BackgroundClient",
    "ClusterError",
    "expected_threads",
    "job_script",
    "jobqueue_cluster",
    "jobqueue_kwargs",
    "lifetime_args",
    "main",
    "open_client",
    "total_threads",
    "walltime_seconds",
]
