"""Dask preload that closes a scheduler, nanny or worker whose parent process died.

Local clusters run as subprocesses of the run. If the run is killed (even by SIGKILL),
their parent disappears and this watchdog closes them within a second or two, so no
orphaned Dask processes stay behind. Used as ``preload=["sbi_rounds.watchdog"]``.
"""

from __future__ import annotations

import os
from typing import Any

from tornado.ioloop import PeriodicCallback

__all__ = ["dask_setup"]


def dask_setup(server: Any) -> None:
    """Start a periodic check of the parent PID on ``server``'s event loop."""
    parent = os.getppid()

    async def check() -> None:
        if os.getppid() != parent:
            callback.stop()
            await server.close()

    callback = PeriodicCallback(check, 1000)
    callback.start()
    server._sbi_rounds_watchdog = callback  # keep a reference for the server's lifetime
