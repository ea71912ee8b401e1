"""Batch systems through dask-jobqueue: job settings, walltimes, the cluster, its script."""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask
from dask.utils import parse_timedelta

from sbi_rounds.config import ClusterConfig

__all__ = [
    "JOBQUEUE_CLASSES",
    "job_script",
    "jobqueue_class",
    "jobqueue_cluster",
    "jobqueue_kwargs",
    "lifetime_args",
    "main",
    "walltime_seconds",
]

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

#: Batch systems that call the accounting project ``project`` rather than ``account``.
_PROJECT_NAMED = ("sge", "lsf", "oar")
#: How a two-field walltime ``A:B`` reads, and what unit a bare number has, per system.
_TWO_FIELDS_HOURS = ("lsf", "oar")  # HH:MM; elsewhere MM:SS
_BARE_UNIT = {"slurm": 60, "lsf": 60, "oar": 3600}  # elsewhere seconds
#: Seconds between checks that every batch job asked for is still there.
_REPLENISH_SECONDS = 5.0


# --- batch systems ----------------------------------------------------------------------
def walltime_seconds(walltime: str, kind: str) -> int:
    """A batch system's walltime in seconds, read the way ``kind`` reads it.

    ``H:M:S`` everywhere; SLURM also ``D-H``, ``D-H:M``, ``D-H:M:S``, ``M:S`` and minutes;
    PBS, SGE and Moab ``M:S`` and seconds; LSF ``H:M`` and minutes; OAR ``H:M`` and hours.

    Raises:
        ValueError: The walltime is not in one of those forms.
    """
    text = str(walltime).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if m is None:
        raise ValueError(
            f"walltime {walltime!r} is not a time like '01:30:00' (HH:MM:SS); set "
            "cluster.jobqueue.walltime (or walltime in jobqueue.yaml) in that form"
        )
    days, a, b, c = m.groups()
    fields = [int(v) for v in (a, b, c) if v is not None]
    if days is not None:
        if kind != "slurm":
            raise ValueError(f"walltime {walltime!r}: the D-HH form is SLURM's; use HH:MM:SS")
        fields += [0] * (3 - len(fields))  # D-H, D-H:M, D-H:M:S
        h, mi, s = fields
        return int(days) * 86400 + h * 3600 + mi * 60 + s
    if len(fields) == 3:
        return fields[0] * 3600 + fields[1] * 60 + fields[2]
    if len(fields) == 2:
        if kind in _TWO_FIELDS_HOURS:
            return fields[0] * 3600 + fields[1] * 60
        return fields[0] * 60 + fields[1]
    return fields[0] * _BARE_UNIT.get(kind, 1)


def lifetime_args(walltime: int, margin: float) -> list[str]:
    """``dask worker`` options that retire a worker at least ``margin`` s before ``walltime``.

    Workers retire at a random time in ``[walltime - margin - 2 s', walltime - margin]``
    with the stagger ``s' = min(60 s, 5% of the walltime)``, so the workers of jobs that
    started together do not all leave at once. The lifetime counts from the worker's
    start, a few seconds after the job's; keep ``margin`` above that.

    Raises:
        ValueError: The walltime leaves no time to work after the margin.
    """
    stagger = int(min(60.0, 0.05 * walltime))
    lifetime = int(walltime - margin) - stagger
    if lifetime - stagger <= 0:
        raise ValueError(
            f"a walltime of {walltime} s leaves no time for simulations after the "
            f"lifetime margin of {margin:g} s; raise cluster.jobqueue.walltime or lower "
            "cluster.jobqueue.lifetime_margin"
        )
    return ["--lifetime", f"{lifetime}s", "--lifetime-stagger", f"{stagger}s"]


def _import_jobqueue() -> Any:
    """Import dask-jobqueue, keeping this process's SIGINT handler.

    dask-jobqueue's ``runner`` module installs its own SIGINT handler at import time, which
    would replace our clean Ctrl-C handling, and fails outright when first imported outside
    the main thread (as :class:`BackgroundClient` does). Importing it here, from the main
    thread, and restoring the handler avoids both.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        import dask_jobqueue  # raises its own error if never imported from the main thread

        return dask_jobqueue
    previous = signal.getsignal(signal.SIGINT)
    try:
        import dask_jobqueue
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
    return dask_jobqueue


def jobqueue_class(kind: str) -> Any:
    try:
        dask_jobqueue = _import_jobqueue()
    except ImportError:
        raise ImportError(
            f"cluster kind {kind!r} needs dask-jobqueue: pip install 'sbi-rounds[hpc]' "
            "(or pip install dask-jobqueue)"
        ) from None
    return getattr(dask_jobqueue, JOBQUEUE_CLASSES[kind])


def jobqueue_kwargs(config: ClusterConfig) -> dict[str, Any]:
    """The keyword arguments :func:`jobqueue_cluster` passes to the dask-jobqueue class.

    Each setting resolves as: ``cluster.jobqueue`` in the run config, else the user's
    dask-jobqueue configuration (``~/.config/dask/jobqueue.yaml``, section
    ``jobqueue.<kind>``), else dask-jobqueue's default. Lists (``job_extra_directives``,
    ``job_script_prologue``) replace the file's lists when given. ``account`` is passed as
    ``project`` to SGE, LSF and OAR. When a walltime is known, ``--lifetime`` options
    retire workers ``lifetime_margin`` before it (unless the file's
    ``worker-extra-args`` sets ``--lifetime`` itself).

    Raises:
        ValueError: A setting the batch system does not have, or an unreadable walltime.
        ImportError: dask-jobqueue is not installed.
    """
    kind = config.kind
    if kind not in JOBQUEUE_CLASSES:
        raise ValueError(
            f"cluster kind {kind!r} is not a batch system; use one of {sorted(JOBQUEUE_CLASSES)}"
        )
    cls = jobqueue_class(kind)
    section = cls.job_cls.default_config_name()
    accepted = {
        name
        for klass in cls.job_cls.__mro__
        if "__init__" in vars(klass)
        for name in inspect.signature(klass.__init__).parameters
    }
    jq = config.jobqueue
    given: dict[str, Any] = {
        name: getattr(jq, name)
        for name in ("cores", "memory", "processes", "walltime", "queue", "interface")
        if getattr(jq, name) is not None
    }
    if jq.account is not None:
        given["project" if kind in _PROJECT_NAMED else "account"] = jq.account
    for name in ("job_extra_directives", "job_script_prologue"):
        if getattr(jq, name):
            given[name] = list(getattr(jq, name))
    unknown = sorted(k for k in given if k not in accepted)
    if unknown:
        raise ValueError(
            f"cluster.jobqueue sets {', '.join(unknown)}, which {cls.__name__} (kind={kind!r}) "
            f"does not have; remove them, or set what {kind} needs under jobqueue.{section} in "
            "jobqueue.yaml (see the dask-jobqueue documentation)"
        )
    _check_scaling(config)
    kwargs = dict(given)
    scheduler_options = dict(dask.config.get(f"jobqueue.{section}.scheduler-options", {}) or {})
    scheduler_options.setdefault("dashboard", config.dashboard)
    scheduler_options.setdefault("dashboard_address", ":8787" if config.dashboard else ":0")
    kwargs["scheduler_options"] = scheduler_options
    walltime = jq.walltime or dask.config.get(f"jobqueue.{section}.walltime", None)
    extra = list(dask.config.get(f"jobqueue.{section}.worker-extra-args", []) or [])
    if walltime and "walltime" in accepted and not any(a.startswith("--lifetime") for a in extra):
        seconds = walltime_seconds(walltime, kind)
        extra += lifetime_args(seconds, parse_timedelta(jq.lifetime_margin))
        kwargs["worker_extra_args"] = extra
    return kwargs


def _check_scaling(config: ClusterConfig) -> None:
    jq = config.jobqueue
    adaptive = jq.minimum_jobs is not None or jq.maximum_jobs is not None
    if adaptive and jq.jobs is not None:
        raise ValueError(
            "cluster.jobqueue sets jobs (a fixed number of batch jobs) and minimum_jobs/"
            "maximum_jobs (adaptive scaling); give one: jobs=N, or minimum_jobs=A and "
            "maximum_jobs=B"
        )
    if adaptive and jq.maximum_jobs is None:
        raise ValueError(
            "cluster.jobqueue.minimum_jobs needs maximum_jobs too (adaptive "
            "scaling between the two)"
        )
    low = jq.minimum_jobs or 0
    if jq.maximum_jobs is not None and jq.maximum_jobs < low:
        raise ValueError(
            f"cluster.jobqueue.maximum_jobs={jq.maximum_jobs} is below minimum_jobs={low}"
        )


@contextmanager
def jobqueue_cluster(config: ClusterConfig, *, scale: bool = True) -> Iterator[Any]:
    """A dask-jobqueue cluster for ``config`` (SLURM, PBS, ...), closed on exit.

    The scheduler runs in this process; workers run in batch jobs submitted as
    ``cluster.job_script()`` shows. With ``scale``, ``jobqueue.jobs`` fixed jobs are
    requested (``scale(jobs=N)``, default 1), or adaptive scaling between
    ``minimum_jobs`` and ``maximum_jobs`` is started. Jobs whose workers leave (walltime
    lifetime reached, job killed) are submitted again while the cluster is open.

    Args:
        config: The cluster settings (``kind`` one of :data:`JOBQUEUE_CLASSES`).
        scale: Request jobs; False only builds the cluster (e.g. to read the job script).

    Yields:
        The dask-jobqueue cluster (``SLURMCluster``, ``PBSCluster``, ...).
    """
    cls = jobqueue_class(config.kind)
    kwargs = jobqueue_kwargs(config)
    cluster = cls(**kwargs)
    keeper = None
    try:
        if scale:
            jq = config.jobqueue
            if jq.maximum_jobs is not None:
                cluster.adapt(minimum_jobs=jq.minimum_jobs or 0, maximum_jobs=jq.maximum_jobs)
            else:
                cluster.scale(jobs=jq.jobs or 1)
            keeper = _replenish(cluster)
        yield cluster
    finally:
        if keeper is not None:
            cluster.loop.add_callback(keeper.stop)
        cluster.close()


def _replenish(cluster: Any) -> Any:
    """Every few seconds, resubmit jobs of the cluster's plan whose workers have left.

    dask-jobqueue (like any ``SpecCluster``) starts jobs only when the requested number
    changes, so a job that ends (walltime, lifetime, killed) is not replaced by itself;
    ``scale(jobs=<planned>)`` resubmits the missing ones without changing the plan.
    """
    from tornado.ioloop import PeriodicCallback

    def check() -> None:
        if cluster.status.name != "running":
            return
        planned = len(cluster.worker_spec)
        if len(cluster.workers) < planned:
            log.info(
                "resubmitting %d batch job(s) whose workers left", planned - len(cluster.workers)
            )
            cluster.scale(jobs=planned)

    callback = PeriodicCallback(check, _REPLENISH_SECONDS * 1000)
    cluster.loop.add_callback(callback.start)
    return callback


def job_script(config: ClusterConfig) -> str:
    """The batch script each worker job of ``config`` would run (nothing is submitted)."""
    with jobqueue_cluster(config, scale=False) as cluster:
        return cluster.job_script()


def main(argv: list[str] | None = None) -> int:
    """``python -m sbi_rounds.cluster RUN.yaml``: print the worker job script of a run config."""
    import argparse

    from sbi_rounds.config import RunConfig, load_config_file

    parser = argparse.ArgumentParser(
        prog="python -m sbi_rounds.cluster",
        description="Print the batch script of a run config's "
        "worker jobs, without submitting anything.",
    )
    parser.add_argument(
        "config",
        help="run config file (.yaml or .toml) with cluster.kind "
        f"one of {', '.join(JOBQUEUE_CLASSES)}",
    )
    args = parser.parse_args(argv)
    cluster = RunConfig.model_validate(load_config_file(args.config)).cluster
    if cluster.kind not in JOBQUEUE_CLASSES:
        parser.error(f"{args.config} has cluster.kind={cluster.kind!r}, not a batch system")
    print(job_script(cluster))
    return 0
