"""What a run prints: one live display in a terminal, plain progress lines in a log.

Every log record of the run (Prefect's, Dask's, ours) goes through one handler
(:class:`ConsoleHandler`) that writes through the same ``rich`` console as the live display,
so the two never interleave. Verbosity (``-q``, default, ``-v``, ``-vv``):

- ``-q``: warnings and errors only (the command still prints the final paths).
- default: the run's own messages (round summaries, checks, warnings); Prefect's per-task
  "Finished in state" and "View at" lines and Dask's start-up commands are left out.
- ``-v``: also those, with times and logger names (and tracebacks of failures).
- ``-vv``: also DEBUG records: every epoch's losses (the ``log`` tracker) and the settings.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from sbi_rounds.runtime.progress import STAGE_WORDS, EpochInfo, SimulationInfo

__all__ = [
    "ConsoleHandler",
    "LiveDisplay",
    "adopt_prefect_logging",
    "failures_as_one_line",
    "install_console",
    "quiet_dask_workers",
    "show_run_links",
]

#: Lines of Prefect's engine left out of the console unless ``-v`` (the Prefect UI has them).
_ENGINE_LINES = (
    "Finished in state",
    "Beginning flow run",
    "Beginning subflow run",
    "View at ",
    "Created task run",
)
#: Whether the flow run's "View at" link is shown (its server has a UI and outlives the run).
_LINKS = {"show": False}


def show_run_links(show: bool) -> None:
    """Show Prefect's "View at <link>" line of the flow run at verbosity 0 (a server with a
    UI that outlives the run: the user's), or leave it out (a temporary server)."""
    _LINKS["show"] = show


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class _Quiet(logging.Filter):
    """Leaves out Prefect's engine lines, INFO of Dask and Python warnings raised inside
    installed packages (deprecations of torch, nflows, ...) at verbosity 0."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "py.warnings":
            return "site-packages" not in str(record.args[0] if record.args else record.msg)
        if record.levelno >= logging.WARNING:
            return True
        if record.name.startswith("distributed"):
            return False
        if record.name.startswith(("prefect.flow_runs", "prefect.task_runs")):
            message = str(record.msg)
            if _LINKS["show"] and message.startswith("View at "):
                return True
            return not message.startswith(_ENGINE_LINES)
        return True


class ConsoleHandler(logging.Handler):
    """Writes records through a ``rich`` console: plain messages at INFO, ``warning:`` and
    ``error:`` in front of the others; with ``detailed``, times and logger names too.

    Args:
        console: The console the live display uses (so lines appear above it).
        detailed: Times, levels and logger names on every line (``-v``).
        timestamps: A time in front of every line (logs without a terminal).
        run_threads: Label the lines of runs that write at once (a campaign's): a record of
            an ``online_inference`` flow run by the run's id (its flow run's name), another
            record of a thread named ``run_threads + id`` by that id. None: no labels.
    """

    def __init__(
        self,
        console: Console,
        detailed: bool = False,
        timestamps: bool = False,
        run_threads: str | None = None,
    ) -> None:
        super().__init__()
        self.console, self.detailed, self.timestamps = console, detailed, timestamps
        self.run_threads = run_threads
        self._emitting = False
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s" if detailed else "%(message)s"
        self.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))

    def _label(self, record: logging.LogRecord) -> str | None:
        """The run a record is of (see ``run_threads``), or None."""
        if getattr(record, "flow_name", None) == "online_inference":
            return str(getattr(record, "flow_run_name", "")) or None
        thread, prefix = record.threadName or "", self.run_threads or ""
        return thread.removeprefix(prefix) if prefix and thread.startswith(prefix) else None

    def emit(self, record: logging.LogRecord) -> None:
        if self._emitting:  # a warning or error raised while writing: never recurse
            return
        self._emitting = True
        try:
            text = self.format(record)
            label = self._label(record) if self.run_threads is not None else None
            if label:
                text = f"{label}: {text}"
            style = ""
            if record.levelno >= logging.WARNING:
                style = "red" if record.levelno >= logging.ERROR else "yellow"
                if not self.detailed:
                    word = "error" if record.levelno >= logging.ERROR else "warning"
                    text = f"{word}: {text}"
            if self.timestamps and not self.detailed:
                text = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {text}"
            self.console.print(Text(text, style=style), soft_wrap=True, highlight=False)
        except Exception:  # noqa: BLE001 - logging must never break the run
            pass
        finally:
            self._emitting = False


def _replaced(handler: logging.Handler) -> bool:
    """Prefect's console handler, this module's from an earlier call, or the plain one of
    ``logging.basicConfig`` to the terminal (the command line's, for its first second)."""
    plain = type(handler) is logging.StreamHandler and handler.stream in (sys.stderr, sys.stdout)
    return (
        plain
        or type(handler).__name__ == "PrefectConsoleHandler"
        or isinstance(handler, ConsoleHandler)
    )


def install_console(
    verbosity: int, stream: IO[str] | None = None, *, run_threads: str | None = None
) -> Console:
    """Route every log record of this process through one console at ``verbosity``.

    Replaces Prefect's console handlers (if Prefect is imported already; else call
    :func:`adopt_prefect_logging` once it is), sets the levels of the run's loggers and
    quiets Dask's INFO in this process.

    Args:
        verbosity: -1 (``-q``), 0, 1 (``-v``) or 2 (``-vv``).
        stream: Where to write; default ``sys.stderr`` (whichever it is at each write).
        run_threads: Put the run's id in front of its lines (a campaign's runs; see
            :class:`ConsoleHandler`).

    Returns:
        The console, for a :class:`LiveDisplay`.
    """
    tty = (sys.stderr if stream is None else stream).isatty()
    # no stream: the sys.stderr of the moment of each write (a test may swap it)
    console = Console(
        file=stream, stderr=stream is None, force_terminal=tty or None, soft_wrap=True
    )
    handler = ConsoleHandler(
        console, detailed=verbosity >= 1, timestamps=not tty, run_threads=run_threads
    )
    handler.setLevel(logging.WARNING if verbosity < 0 else logging.DEBUG)
    if verbosity <= 0:
        handler.addFilter(_Quiet())
    _INSTALLED[:] = [(handler, verbosity)]
    if "prefect" in sys.modules:
        adopt_prefect_logging()
    else:
        _attach(handler, verbosity)
    logging.captureWarnings(True)  # Python warnings as log records, through the same console
    return console


def adopt_prefect_logging() -> None:
    """Set up Prefect's logging now and route it through the installed console.

    Importing Prefect's flow API sets up its logging, which replaces the root logger's
    handlers: the command line installs its console first (so that the Dask cluster can
    start before the heavy imports) and calls this after them.
    """
    from prefect.logging.configuration import PROCESS_LOGGING_CONFIG, setup_logging

    if not PROCESS_LOGGING_CONFIG:  # set up now, so that a later set-up replaces nothing
        setup_logging()
    for handler, verbosity in _INSTALLED:
        _attach(handler, verbosity)


#: The console handler installed last and its verbosity (see :func:`install_console`).
_INSTALLED: list[tuple[logging.Handler, int]] = []


def _attach(handler: logging.Handler, verbosity: int) -> None:
    """``handler`` as the one console handler of the root logger; the run's logger levels."""
    for logger in [logging.getLogger(), *_loggers()]:
        for h in [h for h in logger.handlers if _replaced(h) and h is not handler]:
            logger.removeHandler(h)
    root = logging.getLogger()
    if handler not in root.handlers:
        root.addHandler(handler)
    levels = {
        "sbi_rounds": logging.DEBUG if verbosity >= 2 else logging.INFO,
        "sbi_rounds.metrics": logging.DEBUG if verbosity >= 2 else logging.INFO,
        "distributed": logging.INFO if verbosity >= 1 else logging.WARNING,
        "flows": logging.INFO,
    }
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@contextmanager
def quiet_dask_workers(verbosity: int) -> Iterator[None]:
    """While inside, the Dask processes this run starts log warnings only (their start-up
    and preload lines), unless ``-v`` or the user set ``DASK_LOGGING__DISTRIBUTED``; and,
    unless ``-v``, no ``Compute Failed`` block with a traceback for a failed chunk (the run
    says it in one line; the run file keeps the traceback; ``sbi_rounds.runtime.watchdog``)."""
    from sbi_rounds.runtime.watchdog import QUIET

    if verbosity >= 1:
        yield
        return
    os.environ[QUIET] = "1"  # read by the worker processes
    set_here = [QUIET]
    if "DASK_LOGGING__DISTRIBUTED" not in os.environ:
        os.environ["DASK_LOGGING__DISTRIBUTED"] = "warning"
        set_here.append("DASK_LOGGING__DISTRIBUTED")
    try:
        yield
    finally:
        for name in set_here:
            os.environ.pop(name, None)


#: Prefect's loggers of flow and task runs, which log a failed run's error and traceback.
_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.engine")


def _no_traceback(record: logging.LogRecord) -> bool:
    """Leave out errors (a failed task or flow run, with its traceback); strip the traceback
    of other records."""
    if record.levelno >= logging.ERROR:
        return False
    record.exc_info = None
    record.exc_text = None
    return True


@contextmanager
def failures_as_one_line(verbosity: int) -> Iterator[None]:
    """While inside and below ``-v``, Prefect's run loggers log no error or traceback: the
    command ends with the one ``error:`` line that says what failed."""
    loggers = [] if verbosity >= 1 else [logging.getLogger(n) for n in _RUN_LOGGERS]
    for logger in loggers:
        logger.addFilter(_no_traceback)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(_no_traceback)


def _loggers() -> list[logging.Logger]:
    return [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]


class LiveDisplay:
    """The terminal's live display (a ``sbi_rounds.runtime.progress.ProgressView``): the round and
    stage, simulations done / total with one rate and the time left, the training epoch with
    the best validation loss and the epochs since it out of the patience.

    Args:
        console: From :func:`install_console` (log lines then appear above the display).
        rounds: The run's rounds, shown as ``round 2/5``.
    """

    def __init__(self, console: Console, rounds: int) -> None:
        self.rounds = rounds
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=28),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            refresh_per_second=4,
        )
        self._task: TaskID | None = None
        self._started = False

    def stage(self, round_: int, name: str) -> None:
        if not self._started:
            self.progress.start()
            self._started = True
        if self._task is not None:
            self.progress.remove_task(self._task)
        word = STAGE_WORDS.get(name, name)
        self._task = self.progress.add_task(
            f"round {round_}/{self.rounds} {word}", total=None, status=""
        )

    def simulated(self, info: SimulationInfo) -> None:
        if self._task is None:
            return
        rate = f" · {info.rate:.3g}/s · {_clock(info.eta)} left" if info.rate > 0 else ""
        self.progress.update(
            self._task,
            total=info.total,
            completed=info.done,
            status=f"{info.done}/{info.total}{rate}",
        )

    def epoch(self, info: EpochInfo) -> None:
        if self._task is None:
            return
        status = f"epoch {info.epoch}"
        if info.best_val_loss is not None:
            status += f" · best {info.best_val_loss:.4g}"
            if info.patience is not None:
                status += f" · {info.since_best}/{info.patience} since best"
        self.progress.update(self._task, total=info.max_epochs, completed=info.epoch, status=status)

    def close(self) -> None:
        if self._started:
            self.progress.stop()
            self._started = False
        self._task = None

    def __enter__(self) -> LiveDisplay:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
