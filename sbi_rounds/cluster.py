"""Dask clusters for simulation: local subprocesses, an existing scheduler, or a batch system."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import dask
from distributed import Client

from sbi_rounds.config import ClusterConfig

__all__ = ["JOBQUEUE_CLASSES", "open_client", "total_threads"]

log = logging.getLogger(__name__)

#: dask-jobqueue cluster classes by ``ClusterConfig.kind``.
JOBQUEUE_CLASSES = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
    "oar": "OARCluster",
    "moab": "MoabCluster",
}


@contextmanager
def open_client(config: ClusterConfig) -> Iterator[Client]:
    """Start or connect to the cluster ``config`` describes and yield a client.

    Clusters started here are closed on exit (also on Ctrl-C); an existing scheduler
    (``address``, ``scheduler_file``) is only disconnected from.
    """
    with ExitStack() as stack:
        if config.kind == "local":
            cluster = stack.enter_context(_local_cluster(config))
            client = stack.enter_context(Client(cluster))
        elif config.kind == "address":
            client = stack.enter_context(Client(config.address, timeout="30s"))
        elif config.kind == "scheduler_file":
            client = stack.enter_context(Client(scheduler_file=config.scheduler_file,
                                                timeout="30s"))
        else:
            cluster = stack.enter_context(_jobqueue_cluster(config))
            client = stack.enter_context(Client(cluster))
        if config.kind == "local":
            client.wait_for_workers(config.workers, timeout=120)
        log.info("Dask scheduler %s, dashboard %s", client.scheduler.address,
                 client.dashboard_link if config.dashboard else "off")
        yield client


def total_threads(client: Client) -> int:
    """Threads across the cluster's current workers (at least 1)."""
    return max(1, sum(client.nthreads().values()))


@contextmanager
def _local_cluster(config: ClusterConfig) -> Iterator[Any]:
    from distributed.deploy.subprocess import SubprocessCluster

    # Workers are `dask spec` subprocesses: they never import the flow's __main__ (and
    # therefore never Prefect), and a watchdog preload closes them if this process dies.
    preload = {"preload": ["sbi_rounds.watchdog"]}
    with dask.config.set({"distributed.worker.daemon": False}):
        cluster = SubprocessCluster(
            host="127.0.0.1",
            n_workers=config.workers,
            threads_per_worker=config.threads_per_worker,
            dashboard_address=":0" if config.dashboard else None,
            scheduler_kwargs=dict(preload),
            worker_kwargs={**preload, "death_timeout": 60, "memory_limit": 0},
        )
    try:
        yield cluster
    finally:
        cluster.close()


@contextmanager
def _jobqueue_cluster(config: ClusterConfig) -> Iterator[Any]:
    try:
        import dask_jobqueue
    except ImportError:
        raise ImportError(
            f"cluster kind {config.kind!r} needs dask-jobqueue: pip install \"sbi-rounds[hpc]\""
        ) from None
    cls = getattr(dask_jobqueue, JOBQUEUE_CLASSES[config.kind])
    jq = config.jobqueue
    kwargs: dict[str, Any] = {
        k: v for k, v in jq.model_dump().items()
        if k in ("cores", "memory", "processes", "walltime", "queue", "account", "interface")
        and v is not None
    }
    if jq.job_extra_directives:
        kwargs["job_extra_directives"] = jq.job_extra_directives
    if jq.job_script_prologue:
        kwargs["job_script_prologue"] = jq.job_script_prologue
    walltime = jq.walltime or dask.config.get(f"jobqueue.{config.kind}.walltime", None)
    if walltime:
        kwargs["worker_extra_args"] = _lifetime_args(walltime, jq.lifetime_margin)
    cluster = cls(**kwargs)
    try:
        if jq.minimum_jobs is not None or jq.maximum_jobs is not None:
            cluster.adapt(minimum_jobs=jq.minimum_jobs or 0,
                          maximum_jobs=jq.maximum_jobs or max(1, jq.minimum_jobs or 1))
        else:
            cluster.scale(jobs=jq.jobs or 1)
        yield cluster
    finally:
        cluster.close()


def _lifetime_args(walltime: str, margin: str) -> list[str]:
    """Worker options that retire a worker ``margin`` before the job's ``walltime``."""
    from dask.utils import parse_timedelta

    parts = walltime.split("-")
    days = int(parts[0]) if len(parts) == 2 else 0
    hms = [int(p) for p in parts[-1].split(":")]
    while len(hms) < 3:
        hms.append(0)
    seconds = days * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2]
    lifetime = max(60, seconds - int(parse_timedelta(margin)))
    return ["--lifetime", f"{lifetime}s", "--lifetime-stagger", "30s"]
