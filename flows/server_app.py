"""The temporary Prefect server's app: Prefect's API, stopped when its run dies, with one
database migration at a time (``flows.server`` starts it under uvicorn)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["PARENT", "create_app"]

#: Environment variable naming the process whose death stops the server.
PARENT = "SBI_ROUNDS_SERVER_PARENT"


def create_app() -> Any:
    """Prefect's API app (a uvicorn factory) that stops its server when the run dies.

    The watchdog thread sends this process SIGTERM (uvicorn's graceful stop) once its
    parent, the run's process, is gone, even if that was killed by SIGKILL.
    """
    from prefect.server.api.server import create_app as prefect_app

    parent = int(os.environ.get(PARENT, "0"))
    if parent:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="sbi-rounds-parent-watchdog", daemon=True).start()
    return _one_startup_at_a_time(prefect_app())


def _one_startup_at_a_time(app: Any) -> Any:
    """Wrap an ASGI app so that its startup (Prefect migrates its database there) holds an
    exclusive lock beside that database, released once startup has completed or failed.

    Runs started together on a fresh machine (an array of batch jobs, a test suite) each
    start a temporary server on the same SQLite file; their migrations interleave and fail
    (``duplicate column name``, exit status 3). The lock makes them take turns. It is an
    ``flock`` on ``<PREFECT_HOME>/sbi-rounds-server-start.lock``, so a server that dies
    while holding it frees it.
    """
    import fcntl

    from prefect.settings import get_current_settings

    home = Path(get_current_settings().home)
    home.mkdir(parents=True, exist_ok=True)
    lock = open(home / "sbi-rounds-server-start.lock", "a")  # noqa: SIM115 (held until startup ends)

    def release() -> None:
        if not lock.closed:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()

    async def locked(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)

        async def send_releasing(message: dict[str, Any]) -> None:
            if message["type"] in ("lifespan.startup.complete", "lifespan.startup.failed"):
                release()
            await send(message)

        fcntl.flock(lock, fcntl.LOCK_EX)  # blocks this server only, before it serves anything
        try:
            return await app(scope, receive, send_releasing)
        finally:
            release()

    return locked
