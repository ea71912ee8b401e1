"""Signals on the command line: a stop while starting, and SIGTERM as an interrupt after."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from flows.cli.sys_path import working_directory_last

__all__ = ["TIME_LIMIT", "check_time_limit", "interrupts", "quiet_prefect_client", "starting"]

#: Arguments after which a command does nothing slow (no server to start early).
_QUICK = {"-h", "--help", "--print-config"}

#: The signal a batch job receives before its time limit (``#SBATCH --signal=B:USR1@120``).
TIME_LIMIT_SIGNAL = signal.SIGUSR1


class _Flag:
    """Set once the batch system announced the job's time limit (SIGUSR1)."""

    reached = False


#: Whether this process received the time-limit signal (read by ``flows.cli.continuation``).
TIME_LIMIT = _Flag()


def _time_limit_noted(signum: int, frame: FrameType | None) -> None:
    TIME_LIMIT.reached = True


def check_time_limit() -> None:
    """Raise ``RunInterrupted`` if the time-limit signal came while the command was starting."""
    from sbi_rounds.errors import RunInterrupted

    if TIME_LIMIT.reached:
        raise RunInterrupted("received SIGUSR1 (the batch job's time limit) while starting")


def quiet_prefect_client() -> None:
    """Before Prefect is imported: no anonymous usage reports from this process, and no
    warning for log records sent before a flow run exists (the console shows them)."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


def starting(argv: Sequence[str], prog: str) -> None:
    """Set up the command line's first second: a stop now exits at once, cleanly.

    Ctrl-C or SIGTERM while the heavy imports and input checks run (before the run began)
    stops Prefect's early server and exits with status 130 and the resume command. Also
    starts that server (``flows.server.start_early``) unless only help or the settings are
    asked for, so it boots while torch, sbi and Prefect import.
    """

    def stopped_while_starting(signum: int, frame: FrameType | None) -> None:
        server = sys.modules.get("flows.server")
        if server is not None:
            server.stop_early()
        print(
            f"\nStopped ({signal.Signals(signum).name}) while starting, before the run began; "
            f"nothing was written.\nResume with:\n  {prog} " + shlex.join(argv),
            file=sys.stderr,
            flush=True,
        )
        os._exit(130)

    signal.signal(signal.SIGINT, stopped_while_starting)
    signal.signal(signal.SIGTERM, stopped_while_starting)
    signal.signal(TIME_LIMIT_SIGNAL, _time_limit_noted)  # the run stops once it has begun
    quiet_prefect_client()
    working_directory_last()  # python -m flows.online put it first: tasks.py there is not ours
    if not _QUICK & set(argv):
        from flows.server import start_early  # light: no Prefect import

        start_early()


@contextmanager
def interrupts() -> Iterator[None]:
    """While inside, Ctrl-C raises ``KeyboardInterrupt``, SIGTERM and SIGUSR1 ``RunInterrupted``.

    SIGUSR1 is a batch job's time limit coming (:data:`TIME_LIMIT` records it, and the
    command may continue the run in a new job). Each unwinds the run from wherever it is:
    every commit is atomic, the Dask cluster is closed on the way out, and the command
    prints how to resume.
    """
    from sbi_rounds.errors import RunInterrupted

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        if signum == TIME_LIMIT_SIGNAL:
            TIME_LIMIT.reached = True
            raise RunInterrupted("received SIGUSR1 (the batch job's time limit)")
        raise RunInterrupted(f"received {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous_usr1 = signal.signal(TIME_LIMIT_SIGNAL, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(TIME_LIMIT_SIGNAL, previous_usr1)
