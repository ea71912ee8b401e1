"""``prefect server start`` for the tests (one module for the shared server in ``conftest``
and the tests that start one of their own)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from typing import IO, Any

__all__ = ["free_port", "start_prefect_server", "stop_server", "wait_until_healthy"]


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_prefect_server(
    port: int, env: dict[str, str], output: IO[Any] | int = subprocess.DEVNULL, **popen: Any
) -> subprocess.Popen[bytes]:
    """``python -m prefect server start`` on ``127.0.0.1:port``; its output (both streams)
    goes to ``output`` (discarded by default)."""
    command = [sys.executable, "-m", "prefect", "server", "start"]
    return subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT if output is not subprocess.DEVNULL else subprocess.DEVNULL,
        **popen,
    )


def wait_until_healthy(url: str, process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Return once ``url``/health answers 200 (``process``: the server's, where started here).

    Raises:
        RuntimeError: The server exited, or did not answer within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except OSError:
            pass
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            raise RuntimeError(f"the Prefect server at {url} did not start")
        time.sleep(0.5)


def stop_server(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Terminate ``process``, and kill it if it has not exited after ``timeout`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
