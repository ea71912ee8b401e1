"""Continuing a run after a batch job's time limit: the decisions outside a real requeue.

The requeue itself runs on a real SLURM in ``tests/test_cluster_slurm.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from flows.cli.continuation import continuations_done, continue_in_new_job
from sbi_rounds.config import ContinuationConfig


def test_no_requeue_outside_slurm_or_past_the_maximum(capsys):
    settings = ContinuationConfig(max_continuations=2)
    assert not continue_in_new_job(settings, "sbi-rounds run X", environ={})
    assert "outside a SLURM job" in capsys.readouterr().err
    environ = {"SLURM_JOB_ID": "123", "SLURM_RESTART_COUNT": "2"}
    assert continuations_done(environ) == 2
    assert not continue_in_new_job(settings, "sbi-rounds run X", environ=environ)
    err = capsys.readouterr().err
    assert "after 2 continuation(s), the maximum" in err and "sbi-rounds run X" in err
    assert not continue_in_new_job(
        ContinuationConfig(max_continuations=0), "c", environ={"SLURM_JOB_ID": "123"}
    )


@pytest.mark.slow
def test_the_time_limit_signal_stops_a_run_with_the_resume_command(tmp_path):
    # SIGUSR1 outside a batch job: the run stops as for SIGTERM and says nothing requeues it.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("SLURM_JOB_ID", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.cli.main",
            "run",
            "--xobs",
            "0.5",
            "-0.3",
            "--run-dir",
            str(tmp_path / "runs"),
            "--run-id",
            "r",
            "--rounds",
            "1",
            "--simulations-per-round",
            "400",
            "--simulator",
            "test_simulation_helpers:sleepy",
            "--simulator.kwargs",
            "seconds_per_simulation=0.2",
            "--workers",
            "1",
            "--logger",
            "none",
            "--no-progress",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not (tmp_path / "runs" / "r" / "run.h5").exists():  # the run began
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGUSR1)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Stopped at the batch job's time limit (SIGUSR1)" in err
    assert "outside a SLURM job: nothing to requeue" in err and "--run-id r" in err
