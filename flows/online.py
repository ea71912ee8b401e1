"""The ``online_inference`` flow, and its command line: ``python -m flows.online --xobs ...``.

Each round chains the stage tasks: sample proposal -> simulate (Dask) -> append
simulations -> train -> build posterior -> checkpoint -> diagnose (the posterior checks:
summary with MAP, posterior predictive check on Dask, movement from the previous round, C2ST
against reference samples, calibration of round 1). With ``diagnostics.stop_when_stable``
the run ends early once successive rounds stop changing the posterior. Every run ends with
its HTML report, ``<run dir>/report.html``. The run file is the source of truth: rerunning
the same command continues where the last one stopped.

Stopping: Ctrl-C or SIGTERM on the command line; from Prefect, cancelling the flow run. A run
started by a worker or ``flow.serve`` is cancelled by its runner with SIGTERM, which Prefect
turns into ``TerminationSignal`` in the flow; a run started by calling the flow (the command
line against a server) has no runner, so the flow polls its own state and stops at the next
check (twice a second while simulating, every epoch while training, between stages). Either
way every commit is atomic, the Dask cluster is closed and the same parameters resume.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "sbi_rounds")


def _stopped_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM before the run began (importing, checking input): nothing to save."""
    server = sys.modules.get("flows.server")
    if server is not None:
        server.stop_early()
    print(
        f"\nStopped ({signal.Signals(signum).name}) while starting, before the run began; "
        "nothing was written.\nResume with:\n  python -m flows.online "
        + shlex.join(sys.argv[1:]),
        file=sys.stderr,
        flush=True,
    )
    os._exit(130)


if __name__ == "__main__":  # the imports below take seconds: a Ctrl-C there exits cleanly
    signal.signal(signal.SIGINT, _stopped_while_starting)
    signal.signal(signal.SIGTERM, _stopped_while_starting)
    if not {"-h", "--help"} & set(sys.argv[1:]):
        from flows.server import start_early  # light: no Prefect import

        start_early()  # Prefect's temporary server boots while torch, sbi and Prefect import

import argparse  # noqa: E402
import contextvars  # noqa: E402
import importlib.util  # noqa: E402
import logging  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from contextlib import ExitStack, contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from types import FrameType, TracebackType  # noqa: E402
from typing import Any, Literal  # noqa: E402
from uuid import UUID  # noqa: E402

from prefect import flow, get_run_logger  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.context import FlowRunContext  # noqa: E402
from prefect.exceptions import CancelledRun, TerminationSignal  # noqa: E402
from prefect.states import Cancelled, State  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from flows.artifacts import (  # noqa: E402
    SimulationProgress,
    publish_dashboard_link,
    publish_posterior,
    publish_round_table,
)
from flows.server import temporary_server  # noqa: E402
from sbi_rounds.config import (  # noqa: E402
    IDENTITY_FIELDS,
    METHODS,
    RunConfig,
    format_validation_error,
    load_config_file,
)
from sbi_rounds.diagnostics import (  # noqa: E402
    check_inputs,
    check_metrics,
    checks_due,
    describe_checks,
    format_checks,
    stop_reason,
)
from sbi_rounds.locking import RunLockedError  # noqa: E402
from sbi_rounds.stages import (  # noqa: E402  # noqa: E402
    ConfigMismatchError,
    Run,
    RunInterrupted,
    format_round_table,
    preflight,
    round_table,
    run_session,
)
from sbi_rounds.store import RunFileError, Stage  # noqa: E402
from sbi_rounds.training import (  # noqa: E402
    Callback,
    ProgressBar,
    TrackerCallback,
    TrainingLoop,
)
from tasks import (  # noqa: E402
    append_simulations_task,
    build_posterior_task,
    checkpoint_task,
    sample_proposal_task,
    simulate_task,
    train_task,
)
from tasks.rounds import diagnose_task, report_task  # noqa: E402

__all__ = ["build_config", "main", "online_inference", "parse_args"]

#: Set to stop the run at its next check (Ctrl-C/SIGTERM handler, Prefect cancellation).
_STOP = threading.Event()

ProgressFn = Callable[[int, int, float], None]


def _simulation_progress(
    round_: int, enabled: bool
) -> tuple[ProgressFn | None, Callable[[], None]]:
    if not enabled:
        return None, lambda: None
    from tqdm.auto import tqdm

    bar: dict[str, Any] = {}

    def update(done: int, total: int, rate: float) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(
                total=total, desc=f"simulating round {round_}", unit="sim", dynamic_ncols=True
            )
        b = bar["bar"]
        b.update(done - b.n)
        b.set_postfix(sims_per_s=f"{rate:.0f}", refresh=True)

    def close() -> None:
        if "bar" in bar:
            bar["bar"].close()

    return update, close


def _fan_out(*callbacks: ProgressFn | None) -> ProgressFn:
    """One progress callback that calls every given one."""
    active = [c for c in callbacks if c is not None]

    def progress(done: int, total: int, rate: float) -> None:
        for callback in active:
            callback(done, total, rate)

    return progress


#: Clusters the command line started while Prefect's server came up, by cluster settings.
_PRESTARTED: dict[str, Any] = {}


def _warm_up_modules(config: RunConfig) -> list[str]:
    """What workers import ahead of the first chunk: our entry point and the simulator."""
    modules = ["sbi_rounds.simulation"]
    if config.simulator.kind != "command" and config.simulator.path:
        modules.append(config.simulator.path.split(":")[0])
    return modules


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
    from sbi_rounds.cluster import BackgroundClient

    if _needs_simulation(config.run_path, config.rounds):
        key = config.cluster.model_dump_json()
        _PRESTARTED[key] = BackgroundClient(config.cluster, warm_up=_warm_up_modules(config))


def close_prestarted() -> None:
    """Close clusters that were started ahead but not taken by a flow run."""
    while _PRESTARTED:
        _PRESTARTED.popitem()[1].close()


@contextmanager
def _lazy_client(run: Run) -> Iterator[Callable[[], Any]]:
    """A Dask client that starts in the background as soon as the run needs simulations.

    The cluster comes up while the first round's parameters are sampled (or was started by
    the command line while Prefect's server came up); a finished run starts none.
    """
    from sbi_rounds.cluster import BackgroundClient

    with ExitStack() as stack:
        holder: dict[str, Any] = {}
        t0 = time.perf_counter()

        def start() -> Any:
            if "background" not in holder:
                background = _PRESTARTED.pop(run.config.cluster.model_dump_json(), None)
                if background is None:
                    background = BackgroundClient(
                        run.config.cluster, warm_up=_warm_up_modules(run.config)
                    )
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
        if "background" in holder:
            get_run_logger().info("closing the Dask cluster")


def _close_quickly(stack: ExitStack) -> None:
    """Close the Dask client and cluster of a run that is stopping.

    Prefect cancels a flow run of a process worker with SIGTERM to its whole process group,
    which holds the local cluster's scheduler and workers too: they are closing already,
    and each call of the graceful close to the gone scheduler would wait for the default
    30 s connect timeout, longer than the runner's grace period before SIGKILL.
    """
    import dask

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
        logger.info("closed the Dask cluster in %.1f s", time.perf_counter() - t0)


def _report_dashboard(logger: Any, run: Run, client: Any) -> None:
    """Log the Dask dashboard's link (and publish it as a link artifact) when it is on."""
    if not run.config.cluster.dashboard:
        logger.info("Dask dashboard: off (set cluster.dashboard to start it)")
        return
    if run.config.cluster.kind == "local" and importlib.util.find_spec("bokeh") is None:
        logger.warning(
            "cluster.dashboard is on but the Dask dashboard needs bokeh, which is not "
            'installed: pip install "bokeh>=3.1"'
        )
        return
    logger.info("Dask dashboard: %s", client.dashboard_link)
    publish_dashboard_link(logger, run.config.resolved_run_id, client.dashboard_link)


def _tracker(run: Run) -> Any:
    from sbi_rounds.training.trackers import make_tracker

    return make_tracker(run.config.logger, run.directory, run.directory.name)


def _log_round(tracker: Any, run: Run, round_: int) -> dict[str, Any]:
    row = next(r for r in round_table(run.store) if r["round"] == round_)
    metrics = {
        "round/simulations": row["simulations"],
        "round/valid": row["valid"],
        "round/epochs": row["epochs"],
        "round/best_val_loss": row["best_val_loss"],
        **{f"round/{k}": v for k, v in row.items() if k.endswith("_s")},
    }
    tracker.log_metrics({k: float(v) for k, v in metrics.items() if v is not None}, step=round_)
    return row


def _publish_round(logger: Any, run: Run, round_: int, row: dict[str, Any]) -> None:
    """The round's table and posterior artifacts, read back from the run file."""
    run_id = run.config.resolved_run_id
    publish_round_table(logger, run_id, round_table(run.store))
    pairplot = run.store.read_round_attr(round_, "pairplot")
    publish_posterior(
        logger,
        run_id,
        round_,
        rounds=run.config.rounds,
        summary=run.store.read_round_attr(round_, "posterior_summary", {}),
        xobs=run.config.xobs,
        row=row,
        pairplot=None if pairplot is None else run.directory / pairplot,
        run_file=run.store.path,
        diagnostics=run.store.read_round_attr(round_, "diagnostics"),
        calibration=run.store.read_round_attr(round_, "calibration") if round_ == 1 else None,
    )


def _diagnose(logger: Any, tracker: Any, run: Run, round_: int, client: Any) -> bool:
    """Run the round's posterior checks (what is not committed yet) and report them.

    Returns:
        Whether anything was computed (False: every check was committed before).
    """
    if not checks_due(run, round_):
        return False
    _check_stop(round_, "checking the posterior")
    diagnose_task(run, round_, client, _STOP.is_set)
    logger.info("round %d checks: %s", round_, describe_checks(run, round_))
    tracker.log_metrics(check_metrics(run, round_), step=round_)
    return True


def _stops_early(logger: Any, run: Run, round_: int) -> str | None:
    """The reason to end the run after ``round_`` (stopping rule), or None to go on."""
    reason = stop_reason(run, round_)
    if reason is None:
        return None
    logger.info(
        "%s. To run the remaining rounds anyway, rerun without --stop-when-stable "
        "(diagnostics.stop_when_stable=false).",
        reason,
    )
    return reason


def _report(logger: Any, run: Run) -> str | None:
    """Write the run's HTML report; a failure is a warning (the run file has everything)."""
    try:
        path = report_task(run.store.path)
    except Exception as e:  # noqa: BLE001 - the report is a view of the finished run file
        logger.warning(
            "could not write the run report (%s: %s); write it later with: "
            "python -m flows.report %s",
            type(e).__name__,
            e,
            run.directory,
        )
        return None
    logger.info("report: %s", path)
    return str(path)


def _check_stop(round_: int, stage: str) -> None:
    if _STOP.is_set():
        raise RunInterrupted(f"stopped before {stage} of round {round_}")


class _StopTraining(Callback):
    """Interrupts training at the start of an epoch once a stop was requested.

    Training resumes from its last checkpoint in the run file (``training.checkpoint_every``).
    """

    def on_epoch_start(self, loop: TrainingLoop) -> None:
        if _STOP.is_set():
            raise RunInterrupted(f"stopped while training, at epoch {loop.state.epoch}")


class _CancellationWatch:
    """Polls the flow run's state and sets :data:`_STOP` once it is Cancelling or Cancelled.

    For runs without a Prefect runner (the flow called directly, e.g. from the command line
    against a server): cancelling such a run only marks it Cancelling, and nothing would stop
    the process. Runs of a deployment are stopped by their runner's SIGTERM instead, so for
    them (``flow_run_id`` None) this does nothing.

    Args:
        flow_run_id: The flow run to watch, or None.
        interval: Seconds between two reads of its state.
    """

    def __init__(self, flow_run_id: UUID | None, interval: float = 2.0) -> None:
        self.flow_run_id, self.interval = flow_run_id, interval
        self.requested = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_current_run(cls) -> _CancellationWatch:
        """A watch of the current flow run when it has no runner (no deployment)."""
        context = FlowRunContext.get()
        flow_run = context.flow_run if context is not None else None
        runnerless = flow_run is not None and flow_run.deployment_id is None
        return cls(flow_run.id if runnerless else None)

    def _poll(self) -> None:
        with get_client(sync_client=True) as client:
            while not self._done.wait(self.interval):
                try:
                    state = client.read_flow_run(self.flow_run_id).state
                except Exception:  # noqa: BLE001 - a missed poll is retried at the next one
                    continue
                if state is not None and (state.is_cancelling() or state.is_cancelled()):
                    self.requested = True
                    _STOP.set()
                    return

    def __enter__(self) -> _CancellationWatch:
        if self.flow_run_id is not None:
            context = contextvars.copy_context()  # the thread talks to the flow's API
            self._thread = threading.Thread(
                target=context.run, args=(self._poll,), name="cancellation-watch", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)


@flow(name="online_inference", log_prints=True)
def online_inference(
    config: RunConfig,
    allow_changes: list[Literal[IDENTITY_FIELDS]] | None = None,  # type: ignore[valid-type]
    show_progress: bool = False,
) -> dict[str, Any] | State:
    """Run (or resume, or extend) a multi-round SBI run described by ``config``.

    Run it again with the same settings (or the same ``run_id``) to resume an interrupted
    or cancelled run; with more ``rounds`` to extend a finished one.

    Args:
        config: The run's settings: observation, method, rounds, simulations per round,
            simulator, prior, network, training, posterior sampling and the Dask cluster.
        allow_changes: Identity settings (e.g. ``["simulator"]``) allowed to differ from
            the run file's when resuming.
        show_progress: Show progress bars for simulation and training (terminal use).

    Returns:
        ``{"run_file", "run_dir", "rounds": [per-round rows], "pairplots": [...], "report":
        path or None, "stopped_early": reason or None}``; a ``Cancelled`` state when the
        run was cancelled from Prefect without a runner.
    """
    logger = get_run_logger()
    _STOP.clear()
    run_id = config.resolved_run_id
    with (
        _CancellationWatch.for_current_run() as watch,
        run_session(config, allow_changes=allow_changes or ()) as run,
        _lazy_client(run) as client,
    ):
        logger.info("run %s: run file %s", run_id, run.store.path)
        check_inputs(run)
        tracker = _tracker(run)
        tracker.log_params(run.config.model_dump(mode="json"))
        published = False
        stopped_early: str | None = None
        try:
            epochs_before = 0
            for r in range(1, config.rounds + 1):
                if run.store.stage(r) == Stage.DONE:
                    epochs_before += int(run.store.training_summary(r).get("epochs", 0))
                    if _diagnose(logger, tracker, run, r, client):  # checks added since
                        _publish_round(logger, run, r, _log_round(tracker, run, r))
                        published = True
                    stopped_early = _stops_early(logger, run, r)
                    if stopped_early is not None:
                        break
                    continue
                _check_stop(r, "sampling the proposal")
                sample_proposal_task(run, r)
                if run.store.stage(r) < Stage.SIMULATED:
                    _check_stop(r, "simulating")
                    _simulate(logger, run, r, client(), show_progress)
                _check_stop(r, "appending the simulations")
                append_simulations_task(run, r)
                callbacks: list[Any] = [
                    TrackerCallback(tracker, step_offset=epochs_before, log_params=False),
                    _StopTraining(),
                ]
                if show_progress:
                    callbacks.append(ProgressBar(f"training round {r}", leave=False))
                _check_stop(r, "training")
                train_task(run, r, callbacks)
                _check_stop(r, "building the posterior")
                build_posterior_task(run, r)
                checkpoint_task(run, r)
                _diagnose(logger, tracker, run, r, client)
                row = _log_round(tracker, run, r)
                epochs_before += int(row["epochs"] or 0)
                logger.info(
                    "round %d done: %d valid simulations, %s epochs, best validation loss %.4f",
                    r,
                    row["valid"],
                    row["epochs"],
                    row["best_val_loss"],
                )
                _publish_round(logger, run, r, row)
                published = True
                stopped_early = _stops_early(logger, run, r)
                if stopped_early is not None:
                    break
        except (RunInterrupted, TerminationSignal) as stop:
            if isinstance(stop, TerminationSignal):
                how = "stopped by SIGTERM (a cancellation from Prefect, or a kill)"
            elif watch.requested:
                how = f"cancelled from Prefect ({stop})"
            else:
                how = f"stopped ({stop})"
            logger.warning(
                "run %s %s. Everything committed is in %s; run the deployment or the command "
                "again with the same settings (run_id=%s) to resume.",
                run_id,
                how,
                run.store.path,
                run_id,
            )
            if not watch.requested:
                raise
            return Cancelled(message=f"Cancelled; resume with the same settings (run_id={run_id}).")
        finally:
            tracker.flush()
            tracker.close()
        rows = round_table(run.store)
        if not published and rows:
            publish_round_table(logger, run_id, rows)
        pairplots = sorted(str(p) for p in run.directory.glob("round_*_pairplot.png"))
        print("\n" + format_round_table(rows))
        print("\nposterior checks:\n" + format_checks(run))
        if stopped_early is not None:
            print(f"\n{stopped_early}")
        return {
            "run_file": str(run.store.path),
            "run_dir": str(run.directory),
            "rounds": rows,
            "pairplots": pairplots,
            "report": _report(logger, run),
            "stopped_early": stopped_early,
        }


def _simulate(logger: Any, run: Run, round_: int, client: Any, show_progress: bool) -> None:
    """Simulate a round's uncommitted chunks, with a progress bar and a progress artifact."""
    info = run.store.round_info(round_)
    pending = run.store.pending_chunks(round_)
    missing = sum(b - a for a, b in map(info.chunk_bounds, pending))
    artifact = SimulationProgress(
        logger,
        run.config.resolved_run_id,
        round_,
        run.config.rounds,
        done=info.num_simulations - missing,
        total=info.num_simulations,
    )
    bar, close = _simulation_progress(round_, show_progress)
    try:
        result = simulate_task(run, round_, client, _fan_out(bar, artifact), _STOP.is_set)
    finally:
        close()
    if not result.skipped:
        d = result.details
        logger.info(
            "round %d simulated: %d chunk(s) run (%d simulations), %d chunk(s) committed "
            "before and skipped, %d chunk retries",
            round_,
            d["chunks_run"],
            d["simulations_run"],
            d["chunks_skipped"],
            d["retries"],
        )


# --- command line -----------------------------------------------------------------------
def _int_or_auto(value: str) -> int | str:
    return value if value == "auto" else int(value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m flows.online",
        description="Multi-round simulation-based inference (SNPE, TSNPE, SNLE, SNRE) as a "
        "resumable Prefect flow. Rerun the same command to resume an interrupted run or, with "
        "more --rounds, to extend a finished one. Every option can also be given in a "
        "--config file; flags override it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    g = p.add_argument_group("problem")
    g.add_argument(
        "--xobs",
        nargs="+",
        metavar="X",
        help="the observation: numbers, or a path to .npy, .csv or file.h5:dataset",
    )
    g.add_argument(
        "--simulator",
        metavar="MODULE:FUNCTION",
        help="importable simulator (default: the built-in linear Gaussian model "
        "sbi_rounds.examples:linear_gaussian)",
    )
    g.add_argument(
        "--simulator-kind",
        choices=["batched", "per_sample", "command"],
        help="batched: f(theta (N,D)) -> x (N,K); per_sample: f((D,)) -> (K,); "
        "command: an external program (see --simulator-command)",
    )
    g.add_argument(
        "--simulator-command",
        metavar="CMD",
        help="external simulator command line, e.g. './sim {input} {output}'",
    )
    g.add_argument(
        "--prior",
        metavar="MODULE:FUNCTION",
        help="importable function returning a torch Distribution over (D,)",
    )
    g.add_argument(
        "--low",
        nargs="+",
        type=float,
        metavar="L",
        help="box prior lower bounds, one per parameter (default: -2 -2)",
    )
    g.add_argument(
        "--high",
        nargs="+",
        type=float,
        metavar="H",
        help="box prior upper bounds, one per parameter (default: 2 2)",
    )
    g.add_argument("--parameter-names", nargs="+", metavar="NAME", help="parameter labels")
    g = p.add_argument_group("method")
    g.add_argument("--method", choices=list(METHODS), help="inference method (default: snpe)")
    g.add_argument("--rounds", type=int, help="number of rounds (default: 3)")
    g.add_argument(
        "--simulations-per-round",
        nargs="+",
        type=int,
        metavar="N",
        help="simulations per round; a list gives one per round, the last repeating "
        "(default: 1000)",
    )
    g.add_argument(
        "--network",
        metavar="MODEL",
        help="maf, nsf, mdn, made, zuko_maf, zuko_nsf, ...; snre: mlp, resnet, linear",
    )
    g.add_argument("--hidden-features", type=int, help="network width (default: 50)")
    g.add_argument("--num-transforms", type=int, help="flow transforms (default: 5)")
    g.add_argument("--num-bins", type=int, help="spline bins for nsf (default: 10)")
    g.add_argument(
        "--embedding-net",
        metavar="MODULE:FUNCTION",
        help="function returning a torch module that embeds x",
    )
    g.add_argument("--num-atoms", type=int, help="atoms of SNPE's (and NRE-B's) loss (default 10)")
    g.add_argument("--nre-variant", choices=["b", "c"], help="SNRE loss (default: b)")
    g.add_argument(
        "--truncation-quantile",
        type=float,
        help="TSNPE: posterior mass left outside the truncated prior (default 1e-4)",
    )
    g = p.add_argument_group("training")
    g.add_argument("--device", help="training device: cpu, cuda, cuda:N (default: cpu)")
    g.add_argument("--batch-size", type=_int_or_auto,
                   help="training batch size, or auto: about 20 steps per epoch, 50 to 200 "
                   "(default: auto)")
    g.add_argument("--learning-rate", type=float, help="Adam learning rate (default: 5e-4)")
    g.add_argument("--max-epochs", type=int, help="epochs per round at most (default: no limit)")
    g.add_argument(
        "--patience",
        type=int,
        help="epochs without validation improvement before stopping (default: 20)",
    )
    g.add_argument(
        "--logger",
        choices=["stdout", "tensorboard", "mlflow", "wandb", "none"],
        help="where training metrics go (default: stdout)",
    )
    g.add_argument(
        "--logger-uri", help="TensorBoard dir, MLflow tracking URI or W&B dir (default: in run dir)"
    )
    g = p.add_argument_group("posterior")
    g.add_argument("--num-samples", type=int, help="posterior samples stored per round (1000)")
    g.add_argument(
        "--sampler",
        choices=["auto", "direct", "mcmc", "rejection", "importance"],
        help="posterior sampler (auto: direct for SNPE/TSNPE, mcmc for SNLE/SNRE)",
    )
    g.add_argument("--num-chains", type=int, help="MCMC chains (default: 20)")
    g.add_argument("--thin", type=int, help="MCMC thinning (default: 1)")
    g.add_argument("--warmup-steps", type=int, help="MCMC warm-up steps (default: 50)")
    g.add_argument(
        "--init-strategy",
        choices=["resample", "sir", "proposal"],
        help="how MCMC chains start (default: resample)",
    )
    g.add_argument(
        "--mcmc-workers",
        type=int,
        help="processes the MCMC chains are split across (default: 1, vectorized chains)",
    )
    g = p.add_argument_group("posterior checks")
    g.add_argument(
        "--predictive-simulations",
        type=int,
        metavar="N",
        help="posterior predictive simulations per round, on Dask (default: 100; 0: none)",
    )
    g.add_argument(
        "--predictive-alpha",
        type=float,
        metavar="ALPHA",
        help="flag a statistic when x_o is outside the central 1 - alpha predictive interval "
        "(default: 0.01)",
    )
    g.add_argument(
        "--map-iterations",
        type=int,
        metavar="N",
        help="gradient steps of the MAP estimate per round (default: 200; 0: none)",
    )
    g.add_argument(
        "--calibration-simulations",
        type=int,
        metavar="N",
        help="prior test simulations for SBC ranks and expected coverage of round 1's "
        "amortized estimator (default: 0, none; some hundreds for a meaningful check)",
    )
    g.add_argument(
        "--calibration-posterior-samples",
        type=int,
        metavar="M",
        help="posterior samples per calibration test simulation (default: 1000)",
    )
    g.add_argument(
        "--reference",
        metavar="FILE.npy",
        help="reference posterior samples (S, D) at x_o (.npy, .csv or file.h5:dataset): "
        "C2ST against them per round, as sbibm defines it",
    )
    g.add_argument(
        "--true-parameters",
        nargs="+",
        type=float,
        metavar="V",
        help="the parameters x_o was simulated from: marked in the pairplots and reported",
    )
    g.add_argument(
        "--stop-when-stable",
        action="store_true",
        help="end the run early once diagnostics.stable_rounds (default 2) rounds in a row "
        "moved every posterior mean by < 0.1 sd and every width by < 10%%",
    )
    g = p.add_argument_group("simulation (Dask)")
    g.add_argument(
        "--cluster",
        choices=[
            "local",
            "address",
            "scheduler_file",
            "slurm",
            "pbs",
            "sge",
            "lsf",
            "htcondor",
            "oar",
            "moab",
        ],
        help="where simulations run (default: local)",
    )
    g.add_argument("--workers", type=int, help="local Dask workers (default: 2)")
    g.add_argument("--threads-per-worker", type=int, help="threads per local worker (default 1)")
    g.add_argument(
        "--dask-address", metavar="TCP://HOST:PORT", help="connect to an existing Dask scheduler"
    )
    g.add_argument("--scheduler-file", help="connect through a Dask scheduler file")
    g.add_argument("--jobs", type=int, help="batch jobs to start (SLURM/PBS: scale(jobs=N))")
    g.add_argument(
        "--chunk-size",
        help="simulations per Dask task: a number, auto (N/64) or measure (default: auto)",
    )
    g.add_argument(
        "--chunk-seconds",
        type=float,
        help="longest chunk with --chunk-size measure (default: 5)",
    )
    g.add_argument(
        "--max-in-flight",
        type=int,
        help="chunks on the cluster at a time (default: 2 per worker thread)",
    )
    g.add_argument(
        "--adapt",
        nargs=2,
        type=int,
        metavar=("MIN", "MAX"),
        help="batch jobs scale between MIN and MAX (adapt(minimum_jobs, maximum_jobs))",
    )
    g.add_argument(
        "--walltime",
        help="walltime of each batch job, e.g. 02:00:00; workers retire "
        "cluster.jobqueue.lifetime_margin (5 min) before it",
    )
    g.add_argument("--queue", help="batch queue/partition of the worker jobs")
    g.add_argument("--account", help="batch account (project) of the worker jobs")
    g.add_argument("--retries", type=int, help="retries of a failing chunk (default: 2)")
    g.add_argument("--chunk-timeout", type=float, help="seconds before a chunk counts as hung")
    g.add_argument(
        "--commit-interval",
        type=float,
        help="finished chunks are committed together at most this often, in seconds "
        "(default: 0.5; 0: each chunk as it finishes)",
    )
    g.add_argument(
        "--min-valid-fraction",
        type=float,
        help="stop when fewer simulations of a round are valid (default: 0.5)",
    )
    g.add_argument("--dashboard", action="store_true", help="start the Dask dashboard (local)")
    g = p.add_argument_group("run")
    g.add_argument(
        "--config",
        metavar="FILE.yaml|toml",
        help="settings file (same names as RunConfig); flags override it",
    )
    g.add_argument("--run-dir", help="where runs are stored (default: runs)")
    g.add_argument(
        "--run-id",
        help="the run's name (default: derived from the settings, so "
        "the same command resumes the same run)",
    )
    g.add_argument("--seed", type=int, help="run seed (default: 0)")
    g.add_argument(
        "--allow-change",
        action="append",
        choices=list(IDENTITY_FIELDS),
        metavar="SETTING",
        help="resume although this identity setting changed (repeatable; one of "
        f"{', '.join(IDENTITY_FIELDS)})",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


#: Flag name -> dotted RunConfig path.
_FLAG_PATHS = {
    "xobs": "xobs",
    "simulator": "simulator.path",
    "simulator_kind": "simulator.kind",
    "prior": "prior.path",
    "low": "prior.low",
    "high": "prior.high",
    "parameter_names": "parameter_names",
    "method": "method",
    "rounds": "rounds",
    "simulations_per_round": "simulations_per_round",
    "network": "network.model",
    "hidden_features": "network.hidden_features",
    "num_transforms": "network.num_transforms",
    "num_bins": "network.num_bins",
    "embedding_net": "network.embedding_net",
    "nre_variant": "nre.variant",
    "truncation_quantile": "tsnpe.quantile",
    "device": "training.device",
    "batch_size": "training.batch_size",
    "learning_rate": "training.learning_rate",
    "max_epochs": "training.max_epochs",
    "patience": "training.patience",
    "logger": "logger.backend",
    "logger_uri": "logger.uri",
    "num_samples": "posterior.num_samples",
    "sampler": "posterior.sampler",
    "num_chains": "posterior.num_chains",
    "thin": "posterior.thin",
    "warmup_steps": "posterior.warmup_steps",
    "init_strategy": "posterior.init_strategy",
    "mcmc_workers": "posterior.mcmc_workers",
    "predictive_simulations": "diagnostics.predictive_simulations",
    "predictive_alpha": "diagnostics.predictive_alpha",
    "map_iterations": "diagnostics.map_iterations",
    "calibration_simulations": "diagnostics.calibration_simulations",
    "calibration_posterior_samples": "diagnostics.calibration_posterior_samples",
    "reference": "diagnostics.reference",
    "true_parameters": "diagnostics.true_parameters",
    "stop_when_stable": "diagnostics.stop_when_stable",
    "chunk_seconds": "cluster.chunk_seconds",
    "max_in_flight": "cluster.max_in_flight",
    "walltime": "cluster.jobqueue.walltime",
    "queue": "cluster.jobqueue.queue",
    "account": "cluster.jobqueue.account",
    "cluster": "cluster.kind",
    "workers": "cluster.workers",
    "threads_per_worker": "cluster.threads_per_worker",
    "dask_address": "cluster.address",
    "scheduler_file": "cluster.scheduler_file",
    "jobs": "cluster.jobqueue.jobs",
    "chunk_size": "cluster.chunk_size",
    "retries": "cluster.retries",
    "chunk_timeout": "cluster.chunk_timeout",
    "commit_interval": "cluster.commit_interval",
    "min_valid_fraction": "cluster.min_valid_fraction",
    "dashboard": "cluster.dashboard",
    "run_dir": "run_dir",
    "run_id": "run_id",
    "seed": "seed",
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse command-line arguments (only the flags given appear in the namespace)."""
    return _parser().parse_args(argv)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            raise ValueError(f"setting {key!r} in the config file must be a mapping")
        node = child
    node[leaf] = value


def _xobs_value(values: list[str]) -> Any:
    try:
        return [float(v) for v in values]
    except ValueError:
        if len(values) == 1:
            return values[0]  # a file path; RunConfig loads it
        raise ValueError(
            f"--xobs takes numbers or one file path, got {' '.join(values)!r}; e.g. "
            "--xobs 0.5 -0.3 or --xobs obs.npy"
        ) from None


def build_config(args: argparse.Namespace) -> RunConfig:
    """Merge the config file (if any) and the flags into a validated :class:`RunConfig`."""
    values = vars(args)
    data: dict[str, Any] = load_config_file(values["config"]) if "config" in values else {}
    for flag, dotted in _FLAG_PATHS.items():
        if flag not in values:
            continue
        value = values[flag]
        if flag == "xobs":
            value = _xobs_value(value)
        elif flag == "simulations_per_round" and len(value) == 1:
            value = value[0]
        elif flag == "chunk_size" and value.isdigit():
            value = int(value)
        _set_path(data, dotted, value)
    if "simulator_command" in values:
        _set_path(data, "simulator.command", shlex.split(values["simulator_command"]))
        data["simulator"].setdefault("kind", "command")
        data["simulator"].setdefault("path", None)
    if "num_atoms" in values:
        _set_path(data, "npe.num_atoms", values["num_atoms"])
        _set_path(data, "nre.num_atoms", values["num_atoms"])
    if "adapt" in values:
        _set_path(data, "cluster.jobqueue.minimum_jobs", values["adapt"][0])
        _set_path(data, "cluster.jobqueue.maximum_jobs", values["adapt"][1])
    if "dask_address" in values:
        data["cluster"].setdefault("kind", "address")
    if "scheduler_file" in values:
        data["cluster"].setdefault("kind", "scheduler_file")
    if "prior" in values and "low" not in values and "high" not in values:
        data["prior"] = {"path": values["prior"]}
    elif ("low" in values or "high" in values) and "prior" not in values:
        data["prior"] = {
            "low": values.get("low", data.get("prior", {}).get("low")),
            "high": values.get("high", data.get("prior", {}).get("high")),
        }
    if "xobs" not in data:
        raise ValueError("give the observation: --xobs 0.5 -0.3 (or xobs: in the --config file)")
    return RunConfig.model_validate(data)


def _resume_command(argv: Sequence[str], config: RunConfig) -> str:
    args = list(argv)
    if "--run-id" not in args:
        args += ["--run-id", config.resolved_run_id]
    return "python -m flows.online " + shlex.join(args)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    _STOP.set()
    raise RunInterrupted(f"received {signal.Signals(signum).name}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point. Returns the exit status (0 done, 2 bad input, 130 stopped).

    Stopped means Ctrl-C, SIGTERM, or the flow run cancelled from the Prefect UI or API.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = build_config(args)
    except ValidationError as e:
        print(f"error: {format_validation_error(e)}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:  # bad input fails here, in a second, before Prefect and Dask start
        preflight(config, allow_changes=getattr(args, "allow_change", None) or ())
    except (RunFileError, ConfigMismatchError, RunLockedError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        prestart_cluster(config)  # comes up while Prefect's temporary server starts
        with temporary_server():  # in its own process group: see flows/server.py
            result = online_inference(
                config,
                allow_changes=getattr(args, "allow_change", None),
                show_progress="no_progress" not in vars(args) and sys.stderr.isatty(),
            )
    except (KeyboardInterrupt, CancelledRun) as e:
        how = "Cancelled from Prefect" if isinstance(e, CancelledRun) else "Stopped"
        print(
            f"\n{how}. Everything committed is saved in {config.run_path}.\n"
            f"Resume with:\n  {_resume_command(argv, config)}",
            file=sys.stderr,
        )
        return 130
    except Exception as e:  # noqa: BLE001 - user-facing errors are printed without traceback
        from sbi_rounds.cluster import ClusterError
        from sbi_rounds.simulation import SimulationFailed
        from sbi_rounds.stages import InvalidRoundError

        if isinstance(e, (RunFileError, ConfigMismatchError, RunLockedError)) or (
            isinstance(e, ValueError) and not isinstance(e, ValidationError)
        ):
            print(f"error: {e}", file=sys.stderr)
            return 2
        if isinstance(e, (ClusterError, ImportError)):
            print(f"error: {e}", file=sys.stderr)
            return 1
        if isinstance(e, (SimulationFailed, InvalidRoundError)):
            print(
                f"error: {e}\n\nAfter fixing it, resume with:\n  {_resume_command(argv, config)}",
                file=sys.stderr,
            )
            return 1
        raise
    finally:
        close_prestarted()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    print(f"\nrun file: {result['run_file']}")
    for path in result["pairplots"]:
        print(f"pairplot: {path}")
    if result.get("report"):
        print(f"report: {result['report']}")
    if result.get("stopped_early"):
        print(f"stopped early: {result['stopped_early']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
