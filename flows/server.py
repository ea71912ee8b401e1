"""The one launcher of Prefect servers: the command line's temporary server, in a process
group of its own, and ``prefect server start`` with its UI for ``deployments/serve.py``."""

from __future__ import annotations

import atexit
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from flows.server_app import PARENT, create_app

__all__ = [
    "ServerStartError",
    "create_app",
    "default_server",
    "start_early",
    "stop_early",
    "temporary_server",
    "ui_server",
]

log = logging.getLogger(__name__)


class ServerStartError(RuntimeError):
    """The temporary Prefect server did not start (the message says what to do)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_taken(port: int) -> bool:
    """Whether another process listens on (or holds) ``127.0.0.1:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


#: How often a temporary server that lost its port to another process is started again.
_RESPAWNS = 3

#: A server spawned by :func:`start_early` (process, port), taken by ``temporary_server``.
_EARLY: tuple[subprocess.Popen[bytes], int] | None = None


def _spawn(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "flows.server_app:create_app",
            "--app-dir",  # our flows, not a flows/ of the working directory
            str(Path(__file__).resolve().parent.parent),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        process_group=0,
    )


def _server_env() -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # a temporary server sends no telemetry
        PARENT: str(os.getpid()),
    }


def default_server() -> str | None:
    """The API URL of a Prefect server answering at the default local address, else None.

    That is where ``prefect server start`` serves (``PREFECT_SERVER_API_HOST`` and
    ``PREFECT_SERVER_API_PORT``, default ``127.0.0.1:4200``): a server the user keeps
    running, whose UI shows the run while it lasts and after. Asking costs a refused
    connection (well under a millisecond) when none is there.
    """
    host = os.environ.get("PREFECT_SERVER_API_HOST", "127.0.0.1")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    url = f"http://{host}:{os.environ.get('PREFECT_SERVER_API_PORT', '4200')}/api"
    return url if _answers(url) else None


def _answers(url: str) -> bool:
    """Whether a Prefect server's API at ``url`` answers its health check."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:  # noqa: S310
            return bool(answer.status == 200)
    except (OSError, ValueError):
        return False


def start_early() -> None:
    """Start booting the temporary server now, before the run's slow imports (torch, sbi,
    Prefect: seconds), unless ``PREFECT_API_URL`` is set in the environment.

    :func:`temporary_server` then uses it, or stops it if Prefect's settings (a profile)
    name a server after all. It stops by itself if this process dies.
    """
    global _EARLY
    if _EARLY is not None or os.environ.get("PREFECT_API_URL"):
        return
    if os.environ.get("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "").lower() in ("0", "false"):
        return
    if default_server() is not None:  # temporary_server uses it
        return
    port = _free_port()
    _EARLY = (_spawn(port, _server_env()), port)
    atexit.register(stop_early)  # a run that ends before using it (bad input, --help)


def stop_early() -> None:
    """Stop a server from :func:`start_early` that no run has taken (idempotent)."""
    early = _take_early()
    if early is not None and early[0].poll() is None:
        early[0].kill()
        early[0].wait()


def _database() -> str:
    """The temporary server's database, for messages: a SQLite file's path, else the setting
    that names it (whose URL may hold a password)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url
    value = url.get_secret_value() if url is not None else ""
    if value.startswith("sqlite"):
        return value.split(":///", 1)[-1]
    return "the one PREFECT_API_DATABASE_CONNECTION_URL names"


def _take_early() -> tuple[subprocess.Popen[bytes], int] | None:
    global _EARLY
    early, _EARLY = _EARLY, None
    return early


def _stop(server: subprocess.Popen[bytes], timeout: float = 10) -> None:
    server.terminate()
    try:
        server.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def check_configured_server(timeout: float = 10.0) -> None:
    """Refuse a configured Prefect server (``PREFECT_API_URL``) that does not answer.

    Called before the flow starts, so an unreachable server is one line, not a run that
    fails after its first round (the command line closes the cluster it started ahead).
    Nothing to check without a configured server.

    Raises:
        ServerStartError: The server did not answer ``/health`` within ``timeout`` seconds.
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return
    import httpx

    try:
        httpx.get(url.rstrip("/") + "/health", timeout=timeout).raise_for_status()
    except httpx.HTTPError as e:
        raise ServerStartError(
            f"the Prefect server at {url} (PREFECT_API_URL) does not answer ({e}); start it "
            "(prefect server start), correct PREFECT_API_URL, or unset it to run with a "
            "temporary server of the run's own. Nothing was started."
        ) from None


@contextmanager
def temporary_server(timeout: float = 120.0) -> Iterator[str | None]:
    """Start Prefect's temporary server where Prefect would; yield its API URL (else None).

    Prefect starts its temporary server (no ``PREFECT_API_URL`` set) as a child in the run's
    process group. A Ctrl-C in the terminal (SIGINT to the whole foreground group) or a batch
    system's SIGTERM to all of a job's processes then stops the server together with the run,
    and the run spends minutes retrying to report its final state before it ends with a
    traceback. Started here, in a process group of its own, the server lives until the run
    has stopped and reported; its watchdog stops it if the run's process dies first.

    A server already answering at the default local address (``prefect server start``, see
    :func:`default_server`) is used instead of starting one: no seconds of start-up, and
    its UI shows the run.

    Args:
        timeout: Seconds to wait for the server to answer.

    Yields:
        The API URL of the server the run uses (the started one, or the one found at the
        default address); None when a server is configured (``PREFECT_API_URL``) or
        temporary servers are turned off, and nothing was started.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_ALLOW_EPHEMERAL_MODE,
        get_current_settings,
    )

    early = _take_early()
    if PREFECT_API_URL.value() or not PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value():
        if early is not None:
            _stop(early[0])  # a profile names a server: the early one is not needed
        yield None
        return
    running = default_server()
    if running is not None:
        yield from _reuse(running, early)
        return
    env = {**_server_env(), **get_current_settings().to_environment_variables(exclude_unset=True)}
    if early is not None and early[0].poll() is None:
        server, port = early
    else:
        port = _free_port()
        server = _spawn(port, env)
    servers = [server]
    log.info("Starting a temporary Prefect server on %s", _api(port))
    try:
        url = _wait_until_up(servers, port, timeout, lambda port: _spawn(port, env))
        with _api_url(url):
            yield url
    finally:
        _stop(servers[-1])


@contextmanager
def ui_server(host: str = "127.0.0.1", port: int = 4200, timeout: float = 120.0) -> Iterator[str]:
    """Run ``prefect server start`` (Prefect's own server, with its UI and its services, the
    scheduler among them) on ``host:port`` while inside; yield its API URL.

    Args:
        host: The address it listens on.
        port: Its port (not changed when taken: the UI's address is the user's choice).
        timeout: Seconds to wait for the server to answer.

    Raises:
        ServerStartError: A server answers there already, or the one started exited or did
            not answer within ``timeout`` seconds.
    """
    url = f"http://{host}:{port}/api"
    if _answers(url):
        raise ServerStartError(
            f"a server answers at {url} already; use it with PREFECT_API_URL={url}, or pick "
            "another --port"
        )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", host]
    servers = [subprocess.Popen([*command, "--port", str(port)], env=env)]
    try:
        yield _wait_until_up(servers, port, timeout, host=host)
    finally:
        _stop(servers[-1], timeout=30)


def _api(port: int, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{port}/api"


def _wait_until_up(
    servers: list[subprocess.Popen[bytes]],
    port: int,
    timeout: float,
    respawn: Callable[[int], subprocess.Popen[bytes]] | None = None,
    host: str = "127.0.0.1",
) -> str:
    """Wait until the server ``servers[-1]`` (on ``host:port``) answers; return its API URL.

    With ``respawn``, a server that exited because another process bound its port meanwhile
    (a Dask worker starting in the same seconds, another run) is started again on another
    port, appended to ``servers``, up to :data:`_RESPAWNS` times.

    Raises:
        ServerStartError: The server exited otherwise, or did not answer in ``timeout`` s.
    """
    import httpx

    url = _api(port, host)
    deadline = time.monotonic() + timeout
    while True:
        server = servers[-1]
        exited = server.poll() is not None
        if exited and respawn and len(servers) <= _RESPAWNS and _port_taken(port):
            port = _free_port()
            servers.append(respawn(port))
            url = _api(port, host)
            log.info("Port taken meanwhile: starting the Prefect server on %s", url)
            continue
        if exited:
            raise ServerStartError(_exit_message(server.returncode, url, respawn is not None))
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"the temporary Prefect server did not start in {timeout} s; set "
                "PREFECT_API_URL to a running server instead"
                if respawn is not None
                else f"the Prefect server did not answer at {url} in {timeout} s"
            )
        time.sleep(0.1)


def _exit_message(status: int | None, url: str, temporary: bool) -> str:
    """Why a server that exited at start did, and what to do."""
    if not temporary:
        return (
            f"prefect server start exited with status {status} at start (its log is above); "
            f"if {url} is taken, pick another --port"
        )
    return (
        f"the temporary Prefect server exited with status {status} at start (its log is "
        f"above). Its database is {_database()}: if the log says a migration failed ('Can't "
        "locate revision': the file was written by another Prefect version), move that file "
        "away or set PREFECT_HOME to a new folder; or set PREFECT_API_URL to a running server"
    )


def _reuse(url: str, early: tuple[subprocess.Popen[bytes], int] | None) -> Iterator[str]:
    """Use the server at ``url`` (found at the default address) instead of a temporary one."""
    if early is not None:
        _stop(early[0])
    log.info("Using the Prefect server at %s (its UI shows this run)", url[: -len("/api")])
    with _api_url(url):
        yield url


@contextmanager
def _api_url(url: str) -> Iterator[None]:
    """Prefect's client talks to ``url`` while inside; its queued logs are sent on the way out."""
    from prefect.context import refresh_global_settings_context

    old = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    refresh_global_settings_context()
    try:
        yield
    finally:
        _drain_prefect_workers()
        if old is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = old
        refresh_global_settings_context()


def _drain_prefect_workers() -> None:
    """Send the logs and events still queued while the server is up."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=10)
        except Exception:  # noqa: BLE001 - a failed drain must not hide the run's outcome
            pass
