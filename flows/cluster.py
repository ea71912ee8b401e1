"""The run's Dask cluster: started ahead by the command line, taken by the flow, closed fast.

The command line starts the cluster (:func:`prestart_cluster`) as soon as it has the run's
settings, so that its processes start (and import the simulator) while the command imports
torch, sbi and Prefect and Prefect's temporary server comes up; the flow takes it
(:func:`run_cluster`), or starts one itself as soon as the run needs simulations, and closes
it at the end. A stopping run closes it quickly. Importing this module is light (no Prefect,
no sbi) for that reason.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbi_rounds.config import RunConfig
from sbi_rounds.store import Stage

if TYPE_CHECKING:
    from sbi_rounds.lifecycle.run import Run

__all__ = ["close_prestarted", "prestart_cluster", "run_cluster", "shared_cluster"]


#: Clusters the command line started while Prefect's server came up, by cluster settings.
_PRESTARTED: dict[str, Any] = {}
#: Clusters that several runs use in turn or at once (a campaign), by cluster settings.
_SHARED: dict[str, Any] = {}


def _start_in_background(config: RunConfig) -> Any:
    """Start the run's cluster in the background; its workers import our simulation code and
    the simulator's module meanwhile."""
    from sbi_rounds.cluster import BackgroundClient

    modules = ["sbi_rounds.simulation"]
    if config.simulator.kind != "command" and config.simulator.path:
        modules.append(config.simulator.path.split(":")[0])
    return BackgroundClient(config.cluster, warm_up=modules)


def _needs_simulation(store_path: Path, rounds: int) -> bool:
    """Whether any of the first ``rounds`` rounds still has simulations to run."""
    from sbi_rounds.store import RunFileError, RunStore

    if not store_path.exists():
        return True
    try:
        store = RunStore.open(store_path)
        return any((store.stage(r) or 0) < Stage.SIMULATED for r in range(1, rounds + 1))
    except (RunFileError, OSError, KeyError):
        return True  # the flow reports the problem itself


def prestart_cluster(config: RunConfig) -> None:
    """Start the run's Dask cluster in the background, for ``online_inference`` to take.

    The command line calls this before the flow, so the cluster starts while Prefect's
    temporary server does. A finished run starts none.
    """
    if _needs_simulation(config.run_path, config.rounds):
        _PRESTARTED[config.cluster.model_dump_json()] = _start_in_background(config)


def close_prestarted() -> None:
    """Close clusters that were started ahead but not taken by a flow run.

    Quickly, and without an error when they are gone already: after a Ctrl-C to the
    terminal's whole process group (or a batch system's signal to all of a job's processes)
    their processes are stopping on their own.
    """
    import dask

    while _PRESTARTED:
        background = _PRESTARTED.popitem()[1]
        try:
            with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
                background.close()
        except (OSError, TimeoutError) as e:
            logging.getLogger(__name__).debug("the Dask cluster started ahead: %s", e)


@contextmanager
def shared_cluster(configs: Sequence[RunConfig]) -> Iterator[None]:
    """One Dask cluster for the runs of ``configs`` (same cluster settings) inside the block.

    :func:`run_cluster` of those runs takes it and leaves it open; it is closed at the end
    of the block. None starts when no run has simulations left to do.
    """
    config = configs[0]
    key = config.cluster.model_dump_json()
    needed = any(_needs_simulation(c.run_path, c.rounds) for c in configs)
    if not needed or key in _SHARED:
        yield
        return
    background = _PRESTARTED.pop(key, None) or _start_in_background(config)
    _SHARED[key] = background
    try:
        yield
    finally:
        del _SHARED[key]
        background.close()


@contextmanager
def run_cluster(run: Run) -> Iterator[Callable[[], Any]]:
    """A Dask client that starts in the background as soon as the run needs simulations.

    The cluster comes up while the first round's parameters are sampled (or was started by
    the command line while Prefect's server came up); a finished run starts none.
    """
    from prefect import get_run_logger

    with ExitStack() as stack:
        holder: dict[str, Any] = {}
        t0 = time.perf_counter()
        shared_ = _SHARED.get(run.config.cluster.model_dump_json())

        def start() -> Any:
            shared = _SHARED.get(run.config.cluster.model_dump_json())
            if shared is not None:  # a campaign's: it closes it
                holder.setdefault("background", shared)
            if "background" not in holder:
                background = _PRESTARTED.pop(run.config.cluster.model_dump_json(), None)
                if background is None:
                    background = _start_in_background(run.config)
                holder["background"] = background
                stack.callback(background.close)
            return holder["background"]

        def get() -> Any:
            if "client" not in holder:
                logger = get_run_logger()
                client = start().get()
                holder["client"] = client
                logger.info(
                    "Dask cluster ready %.1f s after the run started: %s, %d worker(s)",
                    time.perf_counter() - t0,
                    client.scheduler.address,
                    len(client.nthreads()),
                )
                _report_dashboard(logger, run, client)
            return holder["client"]

        if _needs_simulation(run.store.path, run.config.rounds):
            start()
        try:
            yield get
        except BaseException:
            if "background" in holder:
                _close_quickly(stack)
            raise
        if "background" in holder and holder["background"] is not shared_:
            get_run_logger().debug("closing the Dask cluster")


def _close_quickly(stack: ExitStack) -> None:
    """Close the Dask client and cluster of a run that is stopping.

    Prefect cancels a flow run of a process worker with SIGTERM to its whole process group,
    which holds the local cluster's scheduler and workers too: they are closing already,
    and each call of the graceful close to the gone scheduler would wait for the default
    30 s connect timeout, longer than the runner's grace period before SIGKILL.
    """
    import dask
    from prefect import get_run_logger

    logger = get_run_logger()
    t0 = time.perf_counter()
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
            stack.close()
    except (OSError, TimeoutError) as e:
        logger.info(
            "the Dask cluster shut down on its own (%s: %s); its processes received the "
            "same stop signal",
            type(e).__name__,
            str(e).splitlines()[0] if str(e) else "",
        )
    else:
        logger.debug("closed the Dask cluster in %.1f s", time.perf_counter() - t0)


def _report_dashboard(logger: Any, run: Run, client: Any) -> None:
    """Log the Dask dashboard's link (and publish it as a link artifact) when it is on."""
    from flows.artifacts import publish_dashboard_link

    if not run.config.cluster.dashboard:
        logger.debug("Dask dashboard: off (set cluster.dashboard to start it)")
        return
    if run.config.cluster.kind == "local" and importlib.util.find_spec("bokeh") is None:
        logger.warning(
            "cluster.dashboard is on but the Dask dashboard needs bokeh, which is not "
            'installed: pip install "bokeh>=3.1"'
        )
        return
    logger.info("Dask dashboard: %s", client.dashboard_link)
    publish_dashboard_link(logger, run.config.resolved_run_id, client.dashboard_link)
