"""One writer per run; a lock left by a dead process is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from sbi_rounds.lifecycle.locking import RunLock, RunLockedError


def _hold_lock(path, pid_file):
    code = (
        "import sys, time, pathlib\n"
        "from sbi_rounds.lifecycle.locking import RunLock\n"
        f"RunLock({str(path)!r}).acquire()\n"
        f"pathlib.Path({str(pid_file)!r}).write_text('ok')\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while not pid_file.exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    return proc


def test_second_holder_gets_an_error_naming_the_first(tmp_path):
    path = tmp_path / "run.lock"
    proc = _hold_lock(path, tmp_path / "ready")
    try:
        with pytest.raises(RunLockedError, match=f"in use by PID {proc.pid} on host"):
            RunLock(path).acquire()
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    path = tmp_path / "run.lock"
    proc = _hold_lock(path, tmp_path / "ready")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with RunLock(path) as lock:
        assert lock.previous_holder["pid"] == proc.pid
    with RunLock(path) as lock:  # a clean release leaves no holder behind
        assert lock.previous_holder is None
