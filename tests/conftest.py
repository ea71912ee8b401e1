"""Shared test setup: seeded RNGs, a real Dask cluster, a real Prefect server, small configs."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sbi_rounds.config import RunConfig

__all__: list[str] = []

TESTS = Path(__file__).parent
# Dask workers are subprocesses: they import test simulators (tests/simulators.py) by path.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p
)
sys.path.insert(0, str(TESTS))
from prefect_servers import free_port, start_prefect_server, stop_server, wait_until_healthy  # noqa: E402

# Library stages log through `logging`; outside a flow run Prefect need not ship them.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


def _start_shared_server() -> tuple[subprocess.Popen[bytes], str, str]:
    """``prefect server start`` on a free loopback port, for every run the tests start.

    Started here, before Prefect is imported, and named in ``PREFECT_API_URL`` so that runs
    in this process and in the command-line runs the tests spawn use it instead of each
    starting a temporary server (10-25 s apiece). Under pytest-xdist the controller process
    starts it and its workers inherit the variable: one server for the whole session. Tests of
    the temporary server remove ``PREFECT_API_URL`` from the environment they give a run. It
    stays in pytest's process group: a Ctrl-C or a CI timeout that stops the tests stops it.
    """
    port = free_port()
    home = tempfile.mkdtemp(prefix="sbi-rounds-tests-prefect-")
    env = {
        **os.environ,
        "PREFECT_HOME": home,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    return start_prefect_server(port, env), f"http://127.0.0.1:{port}/api", home


def _stop_shared_server() -> None:
    if _SERVER is not None:
        stop_server(_SERVER[0])
        shutil.rmtree(_SERVER[2], ignore_errors=True)


_SERVER = None if os.environ.get("PREFECT_API_URL") else _start_shared_server()
if _SERVER is not None:
    os.environ["PREFECT_API_URL"] = _SERVER[1]
    os.environ["SBI_ROUNDS_TESTS_SERVER"] = _SERVER[1]  # for xdist workers: wait for it too
    atexit.register(_stop_shared_server)


@pytest.fixture(scope="session", autouse=True)
def _shared_server_answers() -> None:
    """Wait until the shared Prefect server answers (once; it boots during collection)."""
    if _SERVER is not None:
        wait_until_healthy(_SERVER[1], _SERVER[0], timeout=120)
    elif os.environ.get("SBI_ROUNDS_TESTS_SERVER") == os.environ.get("PREFECT_API_URL"):
        wait_until_healthy(os.environ["PREFECT_API_URL"], None, timeout=120)


@pytest.fixture(autouse=True)
def _seed() -> Iterator[None]:
    """Run every test from seed 0 without changing the RNG state other tests see."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        np.random.seed(0)
        random.seed(0)
        yield
    np.random.set_state(np_state)
    random.setstate(py_state)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` when no CUDA device is available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is available")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """A real local Dask cluster (two `dask spec` worker processes), shared by the session."""
    from sbi_rounds.cluster import open_client
    from sbi_rounds.config import ClusterConfig

    with open_client(ClusterConfig(workers=2)) as client:
        yield client


@pytest.fixture(scope="session")
def prefect_server() -> None:
    """The real Prefect server the flows of a test report to: the session's shared one
    (``prefect server start``, above), or the one ``PREFECT_API_URL`` names."""


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., RunConfig]:
    """Build a small, fast RunConfig under ``tmp_path``; keyword arguments override."""

    def make(**overrides: Any) -> RunConfig:
        data: dict[str, Any] = {
            "xobs": [0.5, -0.3],
            "rounds": 2,
            "simulations_per_round": 300,
            "run_dir": str(tmp_path / "runs"),
            "training": {
                "max_epochs": 15,
                "batch_size": 100,
                "checkpoint_every": 5,
                "checkpoint_min_seconds": 0,
            },
            # MAF, fast and exact on the linear-Gaussian default simulator; tests of the
            # methods' default networks (model None) say so
            "network": {"model": "maf", "hidden_features": 20, "num_transforms": 2},
            "posterior": {"num_samples": 200},
            "logger": {"backend": "none"},
            "cluster": {"chunk_size": 50},
            # calibration (on by default for SNPE/TSNPE) only where a test asks for it
            "diagnostics": {"calibration_simulations": 0},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return RunConfig(**data)

    return make


def _writable(directory: Path) -> bool:
    try:
        (directory / ".probe").write_text("")
    except OSError:
        return False
    (directory / ".probe").unlink()
    return True


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], Path]]:
    """``make(directory)``: ``directory`` read-only for this process and its children until
    the test ends (a read-only bind mount as root, ``chmod -w`` otherwise); skips where
    neither makes it read-only."""
    mounted: list[Path] = []
    modes: dict[Path, int] = {}

    def make(directory: Path) -> Path:
        if os.geteuid() == 0:
            for args in (["--bind"], ["-o", "remount,bind,ro"]):
                done = subprocess.run(
                    ["mount", *args, str(directory), str(directory)],
                    capture_output=True,
                    text=True,
                )
                if done.returncode != 0:
                    pytest.skip(
                        "root ignores chmod, and a read-only bind mount is not permitted "
                        f"here: {done.stderr.strip()}"
                    )
                if args == ["--bind"]:
                    mounted.append(directory)
        else:
            for path in [directory, *sorted(directory.rglob("*"))]:
                modes[path] = path.stat().st_mode
                path.chmod(modes[path] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        if _writable(directory):
            pytest.skip(f"{directory} stays writable for this user")
        return directory

    yield make
    for directory in reversed(mounted):
        subprocess.run(["umount", "-l", str(directory)], check=False)
    for path, mode in modes.items():
        path.chmod(mode)
