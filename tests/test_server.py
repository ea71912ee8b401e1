"""The command line's temporary Prefect server (flows/server.py), started for real."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prefect_servers import free_port, start_prefect_server, wait_until_healthy

ROOT = Path(__file__).resolve().parent.parent


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
    ports = [free_port() for _ in range(3)]
    servers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "flows.server:create_app",
                "--app-dir",
                str(ROOT),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "error",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
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
        [
            sys.executable,
            "-m",
            "flows.online",
            "--xobs",
            "0.5",
            "-0.3",
            "--run-dir",
            str(tmp_path / "runs"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    message = result.stderr[result.stderr.rindex("error: ") :]
    assert str(home / "prefect.db") in message and "PREFECT_HOME" in message
    assert "Traceback" not in message


@pytest.mark.slow
def test_a_run_uses_a_prefect_server_already_running_at_the_default_address(tmp_path):
    # `prefect server start` as a user keeps it running (its own database, UI on); the
    # command finds it at PREFECT_SERVER_API_HOST/PORT, starts no server of its own, and the
    # flow run's page in that server's UI answers while and after the run.
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("PREFECT_API_URL", None)
    server = start_prefect_server(port, env, process_group=0)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/api", server, timeout=180)
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "flows.online",
                "--xobs",
                "0.5",
                "-0.3",
                "--rounds",
                "1",
                "--simulations-per-round",
                "100",
                "--network",
                "maf",
                "--max-epochs",
                "3",
                "--workers",
                "1",
                "--num-samples",
                "100",
                "--predictive-simulations",
                "0",
                "--calibration-simulations",
                "0",
                "--run-dir",
                str(tmp_path / "runs"),
                "--run-id",
                "reuse",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert run.returncode == 0, run.stderr[-4000:]
        assert f"Using the Prefect server at http://127.0.0.1:{port}" in run.stderr
        assert "Starting a temporary Prefect server" not in run.stderr
        assert "was temporary" not in run.stderr
        runs = httpx.post(f"http://127.0.0.1:{port}/api/flow_runs/filter", json={}).json()
        assert [r["state_type"] for r in runs] == ["COMPLETED"]
        link = f"http://127.0.0.1:{port}/runs/flow-run/{runs[0]['id']}"
        assert f"View at {link}" in run.stderr  # the console shows the run's page
        page = httpx.get(link, headers={"Accept": "text/html"})  # as a browser asks
        assert page.status_code == 200 and "<html" in page.text.lower()
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)


_PORT_TAKEN_SCRIPT = """
import itertools, socket, sys, httpx
import flows.server as server

held = socket.socket()
held.bind(("127.0.0.1", 0))  # another process's port: bound, as a starting Dask worker's
held.listen()
taken = held.getsockname()[1]
real = server._free_port
ports = itertools.chain([taken], iter(real, None))
server._free_port = lambda: next(ports)  # the race: the chosen port is taken before the bind
with server.temporary_server() as url:
    assert httpx.get(url + "/health", timeout=10).status_code == 200
    print(taken, url)
"""


@pytest.mark.slow
def test_a_temporary_server_whose_port_was_taken_meanwhile_starts_on_another(tmp_path):
    # A killed and restarted run lost its server this way: the port chosen for it was bound
    # by another process during the seconds before the server bound it ("address already
    # in use", status 3), and the run ended with an error.
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env["PREFECT_SERVER_API_PORT"] = str(free_port())  # no server at the default address
    result = subprocess.run(
        [sys.executable, "-c", _PORT_TAKEN_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    taken, url = result.stdout.split()
    assert f":{taken}/" not in url
