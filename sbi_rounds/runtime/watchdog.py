"""Dask preload that closes a scheduler, nanny or worker whose run died, silently, and
leaves out Dask's reports of a simulator's failures the run reports itself.

Local clusters run as subprocesses of the run. If the run is killed (even by SIGKILL),
their parent disappears and this watchdog closes them within a second or two, so no
orphaned Dask processes stay behind; what they would print while closing (lost
connections, cancelled tasks) goes nowhere, since nobody reads it. Used as
``preload=["sbi_rounds.runtime.watchdog"]``.

The run sets :data:`RUN_PID` to its PID for its local cluster (a worker's parent is its
nanny, not the run) and, below ``-v``, :data:`QUIET` to ``1``: then a worker does not log
distributed's ``Compute Failed`` block (with the simulator's traceback) for the run's
chunks, which the run reports in one line each and keeps in the run file.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from tornado.ioloop import PeriodicCallback

__all__ = ["QUIET", "RUN_PID", "dask_setup", "install_filter", "orphaned"]

#: Environment variable: the PID of the run a local cluster serves.
RUN_PID = "SBI_ROUNDS_RUN_PID"
#: Environment variable: ``1`` leaves out the workers' ``Compute Failed`` blocks.
QUIET = "SBI_ROUNDS_QUIET_WORKERS"
#: The key prefix of the run's simulation tasks (``sbi_rounds.simulation.dispatch``).
TASK_PREFIX = "sbi-rounds-"

_PARENT = os.getppid()


def _run_pid() -> int | None:
    value = os.environ.get(RUN_PID, "")
    return int(value) if value.isdigit() else None


def orphaned() -> bool:
    """Whether the process that started this one, or the run it serves, has ended."""
    if os.getppid() != _PARENT:
        return True
    pid = _run_pid()
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _silence() -> None:
    """Send this process's output to /dev/null: an orphan's messages have no reader."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        try:
            os.dup2(devnull, fd)
        except OSError:
            pass
    os.close(devnull)


class _Filter(logging.Filter):
    """Drops every record once the run is gone, and (with :data:`QUIET`) the workers'
    ``Compute Failed`` blocks of the run's tasks."""

    def __init__(self, quiet: bool) -> None:
        super().__init__()
        self.quiet = quiet

    def filter(self, record: logging.LogRecord) -> bool:
        if self.quiet and _compute_failed(record):
            return False
        return not orphaned()


def _compute_failed(record: logging.LogRecord) -> bool:
    if record.name != "distributed.worker" or not str(record.msg).startswith("Compute Failed"):
        return False
    key = record.args[0] if isinstance(record.args, tuple) and record.args else ""
    return str(key).startswith(TASK_PREFIX)


def install_filter() -> logging.Filter:
    """Put the filter on the worker's logger and on every handler of this process."""
    log_filter = _Filter(quiet=os.environ.get(QUIET) == "1")
    logging.getLogger("distributed.worker").addFilter(log_filter)
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if log_filter not in handler.filters:
                handler.addFilter(log_filter)
    return log_filter


def dask_setup(server: Any) -> None:
    """Start a periodic check of the parent (and the run) on ``server``'s event loop."""
    install_filter()  # again: the server's own handlers exist by now

    async def check() -> None:
        if orphaned():
            callback.stop()
            _silence()
            await server.close()

    callback = PeriodicCallback(check, 1000)
    callback.start()
    server._sbi_rounds_watchdog = callback  # keep a reference for the server's lifetime
    return 0
