"""No traceback reaches the console without ``-v``: a failing simulator is one line per
attempt, a killed run's Dask processes end silently, a closed pipe ends the command quietly,
and warnings name processes and times, not dicts.

Real runs (``python -m flows.online`` in a session of its own, real Dask workers, the
session's Prefect server), real signals and real pipes.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from small_run import SMALL as SMALL_RUN

from sbi_rounds.store import RunStore

SMALL = [*SMALL_RUN, "--calibration-simulations", "0", "--predictive-simulations", "0"]


def _argv(runs, *extra):
    return ["--xobs", "0.5", "-0.3", *SMALL, "--run-dir", str(runs), "--run-id", "r", *extra]


def _start(argv, log):
    """``python -m flows.online ARGV`` in a session of its own, its output to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flows.online", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )


def _end(proc):
    """Kill what is left of the run's session."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


FAILING_COMMAND = """\
#!/bin/sh
# the external program: fails on chunks (more than the start-up check's 2 lines)
if [ "$(wc -l < "$1")" -gt 2 ]; then
    echo "reading the grid" >&2
    echo "grid.dat: bad value at line 7" >&2
    exit 3
fi
cp "$1" "$2"
"""


@pytest.mark.parametrize("kind", ["python", "command"])
def test_a_failing_simulator_is_one_line_per_attempt_and_keeps_its_traceback(tmp_path, kind):
    if kind == "python":
        simulator = ["--simulator", "simulators:fails_on_chunks"]
        first = "RuntimeError: the model diverged at step 7"
    else:
        program = tmp_path / "sim.sh"
        program.write_text(FAILING_COMMAND)
        program.chmod(0o755)
        simulator = ["--simulator-command", f"{program} {{input}} {{output}}"]
        first = "exited with status 3: grid.dat: bad value at line 7"
    log = tmp_path / "cli.log"
    proc = _start(_argv(tmp_path / "runs", *simulator, "--retries", "1"), log)
    try:
        status = proc.wait(timeout=300)
    finally:
        _end(proc)
    out = log.read_text(errors="replace")
    assert status == 1, out[-3000:]
    assert "Traceback" not in out and "Compute Failed" not in out, out[-5000:]
    retried = [line for line in out.splitlines() if "failed (attempt 1 of 2), retrying" in line]
    assert len(retried) == 2 and all(first in line for line in retried), out[-3000:]
    assert out.count("error: ") == 1
    error = out[out.index("error: ") :].splitlines()[0]
    assert "failed 2 times: " in error and first in error and "-v prints it" in error, error
    (record,) = RunStore.open(tmp_path / "runs" / "r" / "run.h5").failures(1).values()
    whole = record[1]  # the run file keeps the whole error
    assert ("Traceback" in whole) if kind == "python" else ("reading the grid" in whole), whole


def test_with_v_a_failed_chunk_prints_the_simulators_whole_error(capsys):
    from flows.cli.run import _failure
    from sbi_rounds.simulation import SimulationFailed

    whole = "simulator m:f raised ValueError: bad\nTraceback (most recent call last):\n  ..."
    e = SimulationFailed(f"chunk 0 failed. Last error:\n{whole}", 1, 0, summary="chunk 0: bad")
    assert _failure(e, "sbi-rounds run") == 1
    assert "Traceback" not in capsys.readouterr().err
    assert _failure(e, "sbi-rounds run", verbose=True) == 1
    assert whole in capsys.readouterr().err


def _session_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_a_sigkilled_runs_dask_processes_end_silently(tmp_path):
    """The OOM killer's way: the run dies alone; its scheduler, nannies and workers close
    (``sbi_rounds.runtime.watchdog``) without a word: lost connections and cancelled tasks have
    nobody to tell."""
    log = tmp_path / "cli.log"
    argv = _argv(tmp_path / "runs", "--simulator", "simulators:sleepy", "--workers", "2")
    argv[argv.index("--simulations-per-round") + 1] = "400"
    proc = _start(argv, log)
    try:
        deadline = time.monotonic() + 120
        while "Dask cluster ready" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        time.sleep(1.5)  # chunks running on both workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = log.stat().st_size
        deadline = time.monotonic() + 30
        while _session_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _session_alive(proc.pid), "the run's Dask processes are still running"
    finally:
        _end(proc)
    after = log.read_bytes()[killed_at:].decode(errors="replace")
    assert after == "", after


#: The ``sbi-rounds`` command, as its entry point calls it.
ENTRY_POINT = "import sys; from flows.cli.main import main; sys.exit(main())"


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    """``sbi-rounds status runs | head -1``: the reader is gone before the command writes."""
    store = RunStore.create(tmp_path / "runs" / "one" / "run.h5", config={}, fingerprint="f")
    assert store.path.is_file()
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY_POINT, "status", str(tmp_path / "runs")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # as head does once it has its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 128 + signal.SIGPIPE and err == "", err


def test_a_lock_taken_over_is_named_by_pid_host_and_time(make_config, tmp_path, caplog):
    from sbi_rounds.lifecycle.session import run_session

    config = make_config(rounds=1)
    lock = config.run_path.parent / "run.lock"
    lock.parent.mkdir(parents=True)
    code = textwrap.dedent(f"""
        import os, signal
        from sbi_rounds.lifecycle.locking import RunLock
        RunLock({str(lock)!r}).acquire()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code])
    assert holder.wait(timeout=60) == -signal.SIGKILL
    with caplog.at_level(logging.WARNING, logger="sbi_rounds"), run_session(config):
        pass
    (message,) = [r.getMessage() for r in caplog.records if "took over the run" in r.getMessage()]
    assert f"(PID {holder.pid} on host " in message, message
    assert f" since {time.strftime('%Y')}-" in message and "{" not in message, message


def test_a_restart_of_hung_workers_names_them():
    from sbi_rounds.simulation.dispatch import restarted_text

    text = restarted_text({"tcp://10.0.0.1:4001": "OK", "tcp://10.0.0.2:4002": "timed out"}, 2.04)
    assert text == (
        "restarted hung worker tcp://10.0.0.1:4001; could not restart hung worker "
        "tcp://10.0.0.2:4002 (timed out) in 2.0 s"
    )
