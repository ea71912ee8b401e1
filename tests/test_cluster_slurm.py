"""Simulation rounds on a real SLURM through dask-jobqueue (marker ``cluster``).

A single-node SLURM is started on localhost by ``.ci/slurm/start-local-slurm.sh`` (it needs
root and installs Debian's slurm-wlm and munge with apt where missing), or reused when one
answers already. Where it cannot start, the tests are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dask
import numpy as np
import pytest
import yaml

from sbi_rounds import stages
from sbi_rounds.cluster import open_client
from sbi_rounds.stages import run_session
from sbi_rounds.store import RunStore, Stage

pytest.importorskip("dask_jobqueue", reason="the hpc extra: pip install 'sbi-rounds[hpc]'")
pytestmark = pytest.mark.cluster

REPO = Path(__file__).parents[1]
SCRIPTS = REPO / ".ci" / "slurm"


def _slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10
        )
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and bool({"idle", "mix", "alloc"} & set(out.stdout.split()))


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A running local SLURM (partition ``debug``, 8 CPUs); stopped after if started here."""
    if _slurm_answers():
        yield
        return
    if os.geteuid() != 0:
        pytest.skip("starting a local SLURM needs root (it installs slurm-wlm and munge)")
    state = tmp_path_factory.mktemp("slurm-state")
    try:
        out = subprocess.run(
            ["bash", str(SCRIPTS / "start-local-slurm.sh"), str(state)],
            capture_output=True,
            text=True,
            timeout=600,
        )
    except subprocess.TimeoutExpired:
        out = None
    if out is None or out.returncode != 0:
        subprocess.run(["bash", str(SCRIPTS / "stop-local-slurm.sh"), str(state)], check=False)
        reason = "timed out after 600 s" if out is None else (out.stderr or out.stdout)[-800:]
        pytest.skip(
            f"could not start a local SLURM with .ci/slurm/start-local-slurm.sh "
            f"(apt unreachable, or no root?): {reason}"
        )
    try:
        yield
    finally:
        subprocess.run(["bash", str(SCRIPTS / "stop-local-slurm.sh"), str(state)], check=False)


def _jobs(name: str = "dask-worker") -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-n", name, "-o", "%i %T"], capture_output=True, text=True, check=True
    )
    return out.stdout.split("\n")[:-1]


def _wait_no_jobs(name: str = "dask-worker", timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _jobs(name):
        assert time.monotonic() < deadline, f"jobs left in the queue: {_jobs(name)}"
        time.sleep(1)


def _jobqueue(tmp_path: Path, **extra: object) -> dict[str, object]:
    return {
        "cores": 1,
        "processes": 1,
        "memory": "1GB",
        "walltime": "00:10:00",
        "queue": "debug",
        "interface": "lo",
        "job_extra_directives": [f"--output={tmp_path}/worker-%j.out"],
        **extra,
    }


def test_a_round_runs_on_slurm_jobs(slurm, make_config, tmp_path):
    config = make_config(
        rounds=1,
        simulations_per_round=200,
        cluster={
            "kind": "slurm",
            "chunk_size": 10,
            "jobqueue": _jobqueue(tmp_path, minimum_jobs=1, maximum_jobs=2),
        },
    )
    with run_session(config) as run, open_client(config.cluster) as client:
        stages.sample_proposal(run, 1)
        result = stages.simulate(run, 1, client)
        appended = stages.append_simulations(run, 1)
        in_jobs = client.run(lambda: (os.environ.get("SLURM_JOB_ID"), "prefect" in sys.modules))
        assert len(_jobs()) >= 1
    assert result.details.chunks_run == 20 and appended.details.valid == 200
    assert in_jobs and all(job is not None and not prefect for job, prefect in in_jobs.values())
    store = RunStore.open(config.run_path)
    assert store.stage(1) == Stage.APPENDED and store.pending_chunks(1) == []
    _wait_no_jobs()  # closing the cluster cancelled its jobs


@pytest.mark.slow
def test_jobs_reaching_their_walltime_lifetime_are_replaced(slurm, make_config, tmp_path):
    # Walltime 1 minute, margin 35 s: each worker retires 19-25 s after it starts, and
    # the round needs about 40 s of work, so the job must be replaced to finish.
    config = make_config(
        rounds=1,
        simulations_per_round=400,
        cluster={
            "kind": "slurm",
            "chunk_size": 5,
            "jobqueue": _jobqueue(tmp_path, walltime="00:01:00", lifetime_margin="35s", jobs=1),
        },
        simulator={
            "path": "test_simulation_helpers:sleepy",
            "kwargs": {"seconds_per_simulation": 0.1},
        },
    )
    with (
        dask.config.set({"distributed.deploy.lost-worker-timeout": "1s"}),
        run_session(config) as run,
        open_client(config.cluster) as client,
    ):
        stages.sample_proposal(run, 1)
        result = stages.simulate(run, 1, client)
    store = RunStore.open(config.run_path)
    assert store.pending_chunks(1) == [] and result.details.chunks_run == 80
    assert store.read_simulations(1)[2].all()
    logs = sorted(tmp_path.glob("worker-*.out"))
    assert len(logs) >= 2, "the retired job was not replaced by a new one"
    assert any("lifetime" in p.read_text() for p in logs)
    _wait_no_jobs()


@pytest.mark.slow
def test_the_sbatch_script_runs_the_flow_in_a_batch_job(slurm, tmp_path):
    shipped = yaml.safe_load((REPO / "deployments" / "hpc" / "run-slurm.yaml").read_text())
    shipped.update(
        rounds=1,
        simulations_per_round=200,
        run_dir=str(tmp_path / "runs"),
        simulator={"path": "sbi_rounds.examples:linear_gaussian"},
        training={"max_epochs": 5},
        posterior={"num_samples": 100},
        logger={"backend": "none"},
    )
    shipped["cluster"].update(chunk_size=20, chunk_timeout=120)
    shipped["cluster"]["jobqueue"] = _jobqueue(tmp_path, jobs=2)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(shipped))
    env = {**os.environ, "CONFIG": str(config)}
    out = subprocess.run(
        [
            "sbatch",
            "--wait",
            f"--output={tmp_path}/driver-%j.out",
            str(REPO / "deployments" / "hpc" / "sbi-rounds.sbatch"),
            "--run-id",
            "hpc-test",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=580,
    )
    log = "\n".join(p.read_text() for p in tmp_path.glob("driver-*.out"))
    assert out.returncode == 0, f"{out.stderr}\n{log[-3000:]}"
    assert "run file:" in log
    store = RunStore.open(tmp_path / "runs" / "hpc-test" / "run.h5")
    assert store.stage(1) == Stage.DONE and store.counts(1).valid == 200
    assert np.isfinite(store.read_samples(1)).all()
    assert len(list(tmp_path.glob("worker-*.out"))) >= 1  # the flow submitted worker jobs
    _wait_no_jobs()


def _job_state(job: str) -> tuple[str, int]:
    """A job's state and restart count (``scontrol show job``)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True)
    fields = dict(f.split("=", 1) for f in out.stdout.split() if "=" in f)
    return fields.get("JobState", "GONE"), int(fields.get("Restarts", "0"))


def _start_now(job: str) -> None:
    """Make a requeued (pending) job eligible at once instead of SLURM's delay of ~2 min."""
    subprocess.run(
        ["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True, text=True
    )


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 2-3 jobs of 3 minutes, 2 minutes apart; more on a busy machine
def test_a_driver_job_past_its_time_limit_continues_in_a_requeued_job(slurm, tmp_path):
    # The run needs 110 s of simulations (a sleeping simulator on one worker) after it
    # started (15-45 s, by the machine's load); the job has a 3-minute limit and gets
    # SIGUSR1 about 60 s before it (SLURM sends it up to ~20 s early or late): the run stops,
    # requeues its job (SLURM would hold it 2 minutes; the test releases it at once),
    # and the job continues it.
    settings = {
        "xobs": [0.5, -0.3],
        "rounds": 2,
        "simulations_per_round": 55,
        "seed": 3,
        "simulator": {
            "path": "test_simulation_helpers:sleepy",
            "kwargs": {"seconds_per_simulation": 1.0},
        },
        "network": {"model": "maf", "hidden_features": 20, "num_transforms": 2},
        "training": {"max_epochs": 5, "batch_size": 50, "checkpoint_min_seconds": 0},
        "posterior": {"num_samples": 100},
        "logger": {"backend": "none"},
        "diagnostics": {
            "predictive_simulations": 0,
            "map_iterations": 0,
            "calibration_simulations": 0,
        },
        "cluster": {"kind": "local", "workers": 1, "chunk_size": 5, "dashboard": False},
        "run_dir": str(tmp_path / "runs"),
        "continuation": {"max_continuations": 4},
    }
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(settings))
    venv = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_HOME"}
    env.update(CONFIG=str(config), PATH=f"{venv}:{env['PATH']}", OMP_NUM_THREADS="1")
    log = tmp_path / "driver.out"
    out = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--time=3",
            "--signal=B:USR1@60",
            f"--output={log}",
            str(REPO / "deployments" / "hpc" / "sbi-rounds.sbatch"),
            "--run-id",
            "long",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    job = out.stdout.strip().split(";")[0]
    straight = subprocess.run(  # the same run without interruption, meanwhile, 8 workers
        [
            sys.executable,
            "-m",
            "flows.online",
            "--config",
            str(config),
            "--run-id",
            "straight",
            "--workers",
            "8",
            "--no-progress",
        ],
        cwd=REPO,
        env={**env, "PREFECT_HOME": str(tmp_path / "prefect")},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert straight.returncode == 0, straight.stderr[-3000:]
    deadline = time.monotonic() + 1500
    while (state := _job_state(job))[0] not in (
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "GONE",
        "TIMEOUT",
    ):
        assert time.monotonic() < deadline, f"job {job} still {state}:\n{log.read_text()}"
        if state[0] == "PENDING" and state[1] > 0:
            _start_now(job)  # SLURM holds a requeued job ~2 minutes; the test need not wait
        time.sleep(2)
    text = log.read_text()
    assert state[0] == "COMPLETED", text[-4000:]
    assert 1 <= state[1] <= 4, f"{state}\n{text[-3000:]}"
    assert "requeued to continue the run (continuation 1 of at most 4)" in text
    assert text.count("requeued to continue the run") == state[1]
    assert "is in use by PID" not in text  # a continuation never met the previous job's lock
    done = RunStore.open(tmp_path / "runs" / "long" / "run.h5")
    reference = RunStore.open(tmp_path / "runs" / "straight" / "run.h5")
    assert done.stage(2) == Stage.DONE
    assert np.array_equal(done.read_samples(2), reference.read_samples(2))
    assert np.array_equal(done.read_simulations(2)[1], reference.read_simulations(2)[1])
