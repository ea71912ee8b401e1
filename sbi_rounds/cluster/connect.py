"""Opening the run's Dask cluster: local processes, an existing scheduler, or batch jobs."""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import dask
from distributed import Client

from sbi_rounds.cluster.jobqueue import JOBQUEUE_CLASSES, jobqueue_class, jobqueue_cluster
from sbi_rounds.config import ClusterConfig

__all__ = ["BackgroundClient", "ClusterError", "expected_threads", "open_client", "total_threads"]

log = logging.getLogger(__name__)


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
        log.debug(
            "Dask scheduler %s with %d worker(s); dashboard %s",
            client.scheduler.address,
            len(client.nthreads()),
            client.dashboard_link if config.dashboard else "off",
        )
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
        >>> from sbi_rounds.config import ClusterConfig
        >>> background = BackgroundClient(ClusterConfig(workers=1), warm_up=["numpy"])
        >>> # ... other work, while the cluster starts and its worker imports numpy
        >>> client = background.get()
        >>> len(client.scheduler_info()["workers"])
        1
        >>> background.close()
    """

    def __init__(self, config: ClusterConfig, warm_up: list[str] | tuple[str, ...] = ()) -> None:
        import concurrent.futures

        self.config = config
        if config.kind in JOBQUEUE_CLASSES:
            jobqueue_class(config.kind)  # its import must happen in the main thread
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
    where = (
        f"the Dask scheduler at {config.address}"
        if config.kind == "address"
        else f"the Dask scheduler named in {config.scheduler_file}"
    )
    try:
        if config.kind == "address":
            return Client(config.address, timeout="30s")
        return Client(scheduler_file=config.scheduler_file, timeout="30s")
    except (OSError, TimeoutError, ValueError) as e:
        hint = (
            "is it running (dask scheduler --port 8786) and reachable from here? Give "
            "its address as --dask-address tcp://HOST:PORT"
            if config.kind == "address"
            else "does the file exist and does the scheduler that wrote it still run?"
        )
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


def _tolerate_unknown_removals(cluster: Any) -> None:
    """Let ``cluster`` ignore the removal of a worker its view never listed.

    When a hung worker is restarted, the scheduler may report the removal of an address
    the cluster's view never held; distributed's handler then raises ``KeyError``
    (dask/distributed#5407), which ends the task watching the workers and comes back at
    ``close()``, failing a run whose work is all done.
    """
    update = cluster._update_worker_status

    def update_known(op: str, msg: Any) -> None:
        if op == "remove" and msg not in cluster.scheduler_info.get("workers", {}):
            return
        update(op, msg)

    cluster._update_worker_status = update_known


@contextmanager
def _local_cluster(config: ClusterConfig) -> Iterator[Any]:
    from distributed.deploy.subprocess import SubprocessCluster

    # Workers are `dask spec` subprocesses: they never import the flow's __main__ (and
    # therefore never Prefect). The watchdog preload closes the scheduler and each nanny
    # when this process dies, and each worker when its nanny dies. Worker processes are
    # not daemonic, so simulators may start processes of their own (multiprocessing).
    # The nannies read that setting from their environment, which they inherit here, as
    # every process reads the run's PID (a worker's parent is its nanny).
    preload = ["sbi_rounds.runtime.watchdog"]
    remove_stale_scheduler_files()
    scheduler_file = scheduler_file_path()
    from sbi_rounds.runtime.watchdog import RUN_PID

    environ = {"DASK_DISTRIBUTED__WORKER__DAEMON": "False", RUN_PID: str(os.getpid())}
    with _temporary_environ(**environ):
        cluster = SubprocessCluster(
            host="127.0.0.1",
            n_workers=config.workers,
            threads_per_worker=config.threads_per_worker,
            dashboard_address=":0" if config.dashboard else None,
            scheduler_kwargs={"preload": preload, "scheduler_file": str(scheduler_file)},
            worker_kwargs={
                "preload": preload,
                "preload_nanny": preload,
                "death_timeout": 60,
                "memory_limit": 0,
            },
        )
    _tolerate_unknown_removals(cluster)
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
        finally:
            scheduler_file.unlink(missing_ok=True)


#: The prefix of a local cluster's scheduler file (in the temporary directory), followed
#: by the run process's PID, so a file left by a killed run can be told apart.
SCHEDULER_FILE_PREFIX = "sbi-rounds-scheduler-"


def scheduler_file_path(pid: int | None = None) -> Path:
    """A new scheduler file name for a local cluster of process ``pid`` (default: this one)."""
    pid = os.getpid() if pid is None else pid
    name = f"{SCHEDULER_FILE_PREFIX}{pid}-{uuid.uuid4().hex[:8]}.json"
    return Path(tempfile.gettempdir()) / name


def remove_stale_scheduler_files() -> list[Path]:
    """Delete the scheduler files of local clusters whose run process is gone."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob(SCHEDULER_FILE_PREFIX + "*.json"):
        pid = path.name[len(SCHEDULER_FILE_PREFIX) :].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
