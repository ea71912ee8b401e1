"""The command line's temporary Prefect server (flows/server.py), started for real."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_servers_started_together_on_a_fresh_database_all_start(tmp_path):
    # Without the start lock, their database migrations interleave and all but one exit
    # with status 3 ("duplicate column name"), as runs started together did in CI.
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_UI_ENABLED": "0",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    ports = [_free_port() for _ in range(3)]
    servers = [
        subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "flows.server:create_app",
             "--app-dir", str(ROOT), "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "error"],
            env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for port in ports
    ]
    try:
        waiting, deadline = set(ports), time.monotonic() + 240
        while waiting and time.monotonic() < deadline:
            for server, port in zip(servers, ports, strict=True):
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                if port in waiting:
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).json():
                            waiting.discard(port)
                    except httpx.HTTPError:
                        pass
            time.sleep(0.5)
        assert not waiting, f"servers on {sorted(waiting)} did not answer in 240 s"
        assert (tmp_path / "prefect" / "sbi-rounds-server-start.lock").exists()
    finally:
        for server in servers:
            server.kill()
            server.wait()


@pytest.mark.slow
def test_a_database_of_another_prefect_version_is_named_in_a_message_without_traceback(tmp_path):
    home = tmp_path / "prefect"
    home.mkdir()
    with sqlite3.connect(home / "prefect.db") as db:  # as a newer Prefect leaves it
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        db.execute("INSERT INTO alembic_version VALUES ('ffffffffffff')")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    result = subprocess.run(
        [sys.executable, "-m", "flows.online", "--xobs", "0.5", "-0.3",
         "--run-dir", str(tmp_path / "runs")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    message = result.stderr[result.stderr.rindex("error: "):]
    assert str(home / "prefect.db") in message and "PREFECT_HOME" in message
    assert "Traceback" not in message
