"""Signals on the command line: a stop while starting, and SIGTERM as an interrupt after."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

__all__ = ["interrupts", "quiet_prefect_client", "starting"]

#: Arguments after which a command does nothing slow (no server to start early).
_QUICK = {"-h", "--help", "--print-config"}


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
    quiet_prefect_client()
    if not _QUICK & set(argv):
        from sbi_rounds.cli.packages import pin_own_packages

        pin_own_packages()
        from flows.server import start_early  # light: no Prefect import

        start_early()


@contextmanager
def interrupts() -> Iterator[None]:
    """While inside, Ctrl-C raises ``KeyboardInterrupt`` and SIGTERM ``RunInterrupted``.

    Either unwinds the run from wherever it is: every commit is atomic, the Dask cluster
    is closed on the way out, and the command prints how to resume.
    """
    from sbi_rounds.errors import RunInterrupted

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise RunInterrupted(f"received {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
