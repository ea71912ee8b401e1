"""A run in a read-only directory (an archive, a shared project space) can be read in full.

The directory is made really read-only: a read-only bind mount of it (as root, which
``chmod`` does not stop), or ``chmod -w`` for another user. ``status``, ``report -o``,
``export -o``, ``verify`` and ``load_posterior`` work there; ``report`` and ``export`` to
their default place, and a resume, end in one line that says what to do.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from small_run import SMALL as SMALL_RUN

from flows.cli.main import main as sbi_rounds
from flows.cli.run import main as run_main

SMALL = [*SMALL_RUN, "--calibration-simulations", "0", "--predictive-simulations", "0"]


def _argv(runs: Path, *extra: str) -> list[str]:
    return ["--xobs", "0.5", "-0.3", *SMALL, "--run-dir", str(runs), "--run-id", "r", *extra]


@pytest.fixture(scope="module")
def finished_run(prefect_server, tmp_path_factory):
    """A small finished run's directory, made through the command line."""
    runs = tmp_path_factory.mktemp("read-only") / "runs"
    assert run_main(_argv(runs)) == 0
    return runs / "r"


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _one_error(capfd, code: int, status: int = 2) -> str:
    out, err = capfd.readouterr()
    assert code == status, out + err
    assert "Traceback" not in out + err and err.count("error: ") == 1, out + err
    return err[err.index("error: ") :]


def test_a_read_only_run_is_read_in_full(finished_run, read_only, tmp_path, capfd):
    from sbi_rounds import load_posterior

    run = read_only(finished_run)
    before = _snapshot(run)
    assert sbi_rounds(["status", str(run.parent)]) == 0
    out, err = capfd.readouterr()
    assert "r  (snpe, 1 of 1 rounds done, not running)" in out and not err, out + err
    assert sbi_rounds(["verify", str(run)]) == 0
    assert "intact" in capfd.readouterr().out
    assert sbi_rounds(["export", str(run), "-o", str(tmp_path / "e.npz")]) == 0
    assert np.load(tmp_path / "e.npz")["round_001_theta"].shape == (100, 2)
    assert sbi_rounds(["report", str(run), "-o", str(tmp_path / "report.html")]) == 0
    assert "<html" in (tmp_path / "report.html").read_text()[:2000].lower()
    assert load_posterior(run).sample((5,), show_progress_bars=False).shape == (5, 2)
    capfd.readouterr()
    # to their default place in the run's directory: one line naming -o
    error = _one_error(capfd, sbi_rounds(["report", str(run)]))
    assert f"cannot write the report to {run / 'report' / 'report.html'} (a" in error
    assert "-o FILE.html" in error
    error = _one_error(capfd, sbi_rounds(["export", str(run)]))
    assert f"cannot write {run / 'r.npz'} (a" in error and "-o FILE.npz" in error
    assert _snapshot(run) == before


def test_resuming_a_read_only_run_says_so_in_one_line(finished_run, read_only, capfd):
    run = read_only(finished_run)
    before = _snapshot(run)
    error = _one_error(capfd, run_main(_argv(run.parent, "--rounds", "2")))
    assert f"the run directory {run} is read-only" in error
    assert "copy the run's directory to a writable --run-dir" in error
    assert _snapshot(run) == before


def test_status_of_a_read_only_run_names_the_process_running_it(
    finished_run, read_only, tmp_path, capfd
):
    """The lock file cannot be opened for writing: a shared lock tests for the holder, which
    opened it before the directory became read-only (another mount, another user)."""
    ready = tmp_path / "ready"
    code = (
        "import pathlib, sys, time\n"
        "from sbi_rounds.lifecycle.locking import RunLock\n"
        f"RunLock({str(finished_run / 'run.lock')!r}).acquire()\n"
        f"pathlib.Path({str(ready)!r}).write_text('')\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        run = read_only(finished_run)
        assert sbi_rounds(["status", str(run)]) == 0
        out, err = capfd.readouterr()
        assert f"running: PID {holder.pid} on " in out and not err, out + err
    finally:
        holder.kill()
        holder.wait()
