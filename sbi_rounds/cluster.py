"""Dask clusters for simulation: local subprocesses, an existing scheduler, or a batch system."""

from __future__ import annotations

import inspect
import logging
import os
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import dask
from dask.utils import parse_timedelta
from distributed import Client

from sbi_rounds.config import ClusterConfig

__all__ = [
    "JOBQUEUE_CLASSES",
    "BackgroundClient",
    "ClusterError",
    "expected_threads",
    "job_script",
    "jobqueue_cluster",
    "jobqueue_kwargs",
    "lifetime_args",
    "open_client",
    "total_threads",
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


class ClusterError(RuntimeError):
    """The cluster could not be started or reached; the message says what to do."""


# --- opening ----------------------------------------------------------------------------
@contextmanager
def open_client(config: ClusterConfig) -> Iterator[Client]:
    """Start or connect to the cluster ``config`` describes and yield a client.

    * ``local``: ``workers`` worker processes (``threads_per_worker`` threads each) and a
      scheduler, all subprocesses that never import the caller's ``__main__`` (so never
      Prefect), and that exit on their own if this process dies.
    * ``address`` / ``scheduler_file``: an existing scheduler (``dask scheduler`` and
      ``dask worker``, dask-mpi, ...); only disconnected from at exit.
    * ``slurm``, ``pbs``, ``sge``, ``lsf``, ``htcondor``, ``oar``, ``moab``: a
      dask-jobqueue cluster, see :func:`jobqueue_cluster`.

    Clusters started here are closed on exit, also on Ctrl-C or an error.

    Raises:
        ClusterError: The scheduler cannot be reached, or local workers did not start.
        ImportError: A batch-system kind without dask-jobqueue installed.
        ValueError: Inconsistent batch-system settings (the message names them).
    """
    with ExitStack() as stack:
        if config.kind == "local":
            cluster = stack.enter_context(_local_cluster(config))
            client = _closing(stack, Client(cluster))
            try:
                client.wait_for_workers(config.workers, timeout=120)
            except TimeoutError:
                raise ClusterError(
                    f"only {len(client.nthreads())} of {config.workers} local Dask workers "
                    "started within 120 s; lower --workers or check the machine's memory"
                ) from None
        elif config.kind in ("address", "scheduler_file"):
            client = _closing(stack, _connect(config))
        else:
            cluster = stack.enter_context(jobqueue_cluster(config))
            client = _closing(stack, Client(cluster))
        log.info("Dask scheduler %s with %d worker(s); dashboard %s", client.scheduler.address,
                 len(client.nthreads()), client.dashboard_link if config.dashboard else "off")
        yield client


def _closing(stack: ExitStack, client: Client) -> Client:
    """Close ``client`` when ``stack`` closes.

    Not ``with client``: that also makes it the current client through a context variable,
    which cannot be reset from another thread (see :class:`BackgroundClient`).
    """
    stack.callback(client.close)
    return client


def _import_modules(modules: list[str]) -> dict[str, str]:
    """Import ``modules`` on a worker; return the errors instead of raising them."""
    import importlib

    errors = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - reported by the caller, checked again later
            errors[name] = f"{type(e).__name__}: {e}"
    return errors


class BackgroundClient:
    """:func:`open_client` started in a thread, so the cluster comes up while other work runs.

    The workers also import ``warm_up`` modules (e.g. the simulator's) before :meth:`get`
    returns, so the first chunk does not pay for them. :meth:`close` closes what was
    started, waiting for a start still in progress.

    Example:
        >>> background = BackgroundClient(config.cluster, warm_up=["mysims"])
        >>> ...  # other work
        >>> client = background.get()
    """

    def __init__(self, config: ClusterConfig, warm_up: list[str] | tuple[str, ...] = ()) -> None:
        import concurrent.futures

        self.config = config
        if config.kind in JOBQUEUE_CLASSES:
            _jobqueue_class(config.kind)  # its import must happen in the main thread
        self._stack = ExitStack()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dask-start")
        self._future = self._pool.submit(self._start, list(warm_up))

    def _start(self, warm_up: list[str]) -> Client:
        client = self._stack.enter_context(open_client(self.config))
        if warm_up:
            for worker, errors in client.run(_import_modules, warm_up).items():
                for module, error in errors.items():
                    log.warning("worker %s could not import %s: %s", worker, module, error)
        return client

    def get(self) -> Client:
        """The client, once the cluster is up (raises what starting it raised)."""
        return self._future.result()

    def close(self) -> None:
        """Close the client and the cluster it started (idempotent)."""
        try:
            self._future.result()
        except BaseException:  # noqa: BLE001 - a failed start has nothing more to close
            pass
        finally:
            self._stack.close()
            self._pool.shutdown(wait=False)


def _connect(config: ClusterConfig) -> Client:
    where = (f"the Dask scheduler at {config.address}" if config.kind == "address"
             else f"the Dask scheduler named in {config.scheduler_file}")
    try:
        if config.kind == "address":
            return Client(config.address, timeout="30s")
        return Client(scheduler_file=config.scheduler_file, timeout="30s")
    except (OSError, TimeoutError, ValueError) as e:
        hint = ("is it running (dask scheduler --port 8786) and reachable from here? Give "
                "its address as --dask-address tcp://HOST:PORT" if config.kind == "address"
                else "does the file exist and does the scheduler that wrote it still run?")
        raise ClusterError(f"could not connect to {where} within 30 s ({e}); {hint}") from None


def total_threads(client: Client) -> int:
    """Threads across the cluster's current workers (at least 1)."""
    return max(1, sum(client.nthreads().values()))


def expected_threads(config: ClusterConfig) -> int:
    """Worker threads the configuration asks for (0 where unknown, e.g. an existing scheduler).

    Used to size the number of chunks in flight before batch jobs have started.
    """
    if config.kind == "local":
        return config.workers * config.threads_per_worker
    if config.kind in JOBQUEUE_CLASSES:
        jq = config.jobqueue
        cores = jq.cores or dask.config.get(f"jobqueue.{config.kind}.cores", None) or 1
        jobs = jq.maximum_jobs or jq.jobs or jq.minimum_jobs or 1
        return int(cores) * jobs
    return 0


# --- local ------------------------------------------------------------------------------
@contextmanager
def _temporary_environ(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _local_cluster(config: ClusterConfig) -> Iterator[Any]:
    from distributed.deploy.subprocess import SubprocessCluster

    # Workers are `dask spec` subprocesses: they never import the flow's __main__ (and
    # therefore never Prefect). The watchdog preload closes the scheduler and each nanny
    # when this process dies, and each worker when its nanny dies. Worker processes are
    # not daemonic, so simulators may start processes of their own (multiprocessing).
    # The nannies read that setting from their environment, which they inherit here.
    preload = ["sbi_rounds.watchdog"]
    with _temporary_environ(DASK_DISTRIBUTED__WORKER__DAEMON="False"):
        cluster = SubprocessCluster(
            host="127.0.0.1",
            n_workers=config.workers,
            threads_per_worker=config.threads_per_worker,
            dashboard_address=":0" if config.dashboard else None,
            scheduler_kwargs={"preload": preload},
            worker_kwargs={"preload": preload, "preload_nanny": preload,
                           "death_timeout": 60, "memory_limit": 0},
        )
    try:
        yield cluster
    finally:
        try:
            cluster.close(timeout=10)
        except (OSError, TimeoutError):
            # The scheduler is gone: it got the run's stop signal too (a Ctrl-C reaches the
            # terminal's whole process group). Without this, distributed's exit hook waits
            # another 10 s for the half-closed cluster before the process can end.
            cluster.shutdown_on_close = False
            raise


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


def _jobqueue_class(kind: str) -> Any:
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
        raise ValueError(f"cluster kind {kind!r} is not a batch system; use one of "
                         f"{sorted(JOBQUEUE_CLASSES)}")
    cls = _jobqueue_class(kind)
    section = cls.job_cls.default_config_name()
    accepted = {name for klass in cls.job_cls.__mro__ if "__init__" in vars(klass)
                for name in inspect.signature(klass.__init__).parameters}
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
        raise ValueError("cluster.jobqueue.minimum_jobs needs maximum_jobs too (adaptive "
                         "scaling between the two)")
    low = jq.minimum_jobs or 0
    if jq.maximum_jobs is not None and jq.maximum_jobs < low:
        raise ValueError(f"cluster.jobqueue.maximum_jobs={jq.maximum_jobs} is below "
                         f"minimum_jobs={low}")


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
    cls = _jobqueue_class(config.kind)
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
            log.info("resubmitting %d batch job(s) whose workers left",
                     planned - len(cluster.workers))
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

    parser = argparse.ArgumentParser(prog="python -m sbi_rounds.cluster",
                                     description="Print the batch script of a run config's "
                                     "worker jobs, without submitting anything.")
    parser.add_argument("config", help="run config file (.yaml or .toml) with cluster.kind "
                        f"one of {', '.join(JOBQUEUE_CLASSES)}")
    args = parser.parse_args(argv)
    cluster = RunConfig.model_validate(load_config_file(args.config)).cluster
    if cluster.kind not in JOBQUEUE_CLASSES:
        parser.error(f"{args.config} has cluster.kind={cluster.kind!r}, not a batch system")
    print(job_script(cluster))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
