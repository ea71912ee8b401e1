"""Killed or stopped at any moment: the run file keeps every commit, and the run resumes.

The SIGKILL part runs a reduced ``benchmarks/crash_harness.py`` (the full one is a
benchmark); the SIGINT/SIGTERM part stops real ``python -m flows.online`` processes.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from crash_harness import (  # noqa: E402
    TOKEN_VAR,
    HarnessConfig,
    cli_command,
    next_stage,
    read_state,
    run_harness,
    tagged_processes,
    write_config,
)

from sbi_rounds.seeding import derive_seed  # noqa: E402
from sbi_rounds.store import RunStore, Stage  # noqa: E402

#: Seconds a stopped run may take to exit (generous: the test machine is shared).
STOP_LIMIT = 30.0


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_committed(tmp_path):
    """Kills in Prefect's start-up, simulation, a commit in flight and posterior building:
    after each the file opens and holds every commit (with the uninterrupted run's exact
    values), no process survives, no committed chunk is simulated again, and the finished
    run equals an uninterrupted one."""
    cfg = HarnessConfig(
        workdir=tmp_path,
        rounds=1,
        simulations=200,
        max_epochs=6,
        kills_per_stage={"simulate": 1, "commit": 1, "posterior": 1},
        startup_every=3,
        verbose=False,
    )
    summary = run_harness(cfg)  # raises HarnessFailure on any broken guarantee
    assert summary["kills"] >= 4
    assert {"startup", "simulate", "train", "posterior"} <= set(summary["stages_hit"])
    assert summary["mid_commit_kills"] >= 1
    assert summary["stale_copies_removed_at_restart"] >= 1
    assert all(summary["identical_to_reference"].values())
    # At most the chunks in flight are lost: 2 per worker thread, 50 simulations each.
    assert summary["simulations_lost_per_kill"]["max"] <= 2 * cfg.workers * cfg.chunk_size
    assert summary["chunk_calls"]["max_calls"] <= 1 + summary["kills"]


def test_in_place_commits_rewrite_dataset_bytes_only(tmp_path):
    """Chunks, parameter and sample batches, stages, counts and timings are written into the
    bytes of datasets allocated when the round was planned; no other byte of the file (no
    HDF5 metadata) changes. So a kill in the middle of such a write can tear only rows that
    are not yet marked done, and the file always opens."""
    import h5py
    import numpy as np

    store = RunStore.create(tmp_path / "run.h5", config={}, fingerprint="x")
    store.plan_round(
        1,
        num_simulations=10,
        theta_dim=2,
        x_dim=3,
        chunk_size=4,
        num_posterior_samples=5,
        proposal={"kind": "prior"},
    )
    with h5py.File(store.path, "r") as f:
        extents = [
            (d.id.get_offset(), d.id.get_storage_size())
            for d in f["rounds/0001"].values()
            if isinstance(d, h5py.Dataset)
        ]
    before = np.frombuffer(store.path.read_bytes(), np.uint8)
    store.write_theta(1, 0, np.ones((10, 2)))
    store.write_chunk(1, 2, np.full((2, 3), 7.0), seconds=0.1)
    store.write_samples(1, 0, np.ones((5, 2)))
    store.set_stage(1, Stage.SIMULATED)
    store.set_counts(1, 10, 9)
    store.record_timing(1, "simulate", 1.5)
    after = np.frombuffer(store.path.read_bytes(), np.uint8)
    assert after.shape == before.shape
    changed = np.flatnonzero(after != before)
    assert changed.size > 0
    outside = [int(i) for i in changed if not any(a <= i < a + n for a, n in extents)]
    assert outside == []


def test_the_harness_reads_the_committed_training_epoch(tmp_path):
    """The SIGTERM-while-training tests and the harness's train kills wait for this epoch:
    it must follow the layout the store writes checkpoints in."""
    import torch

    from sbi_rounds.store import RoundCheckpointSink

    store = RunStore.create(tmp_path / "run.h5", config={}, fingerprint="x")
    store.plan_round(
        1,
        num_simulations=10,
        theta_dim=2,
        x_dim=3,
        chunk_size=4,
        num_posterior_samples=5,
        proposal={"kind": "prior"},
    )
    assert read_state(store.path)[1].checkpoint_epoch is None
    RoundCheckpointSink(store, 1).save(
        {"model": {"w": torch.ones(3)}, "epoch": 6, "history": [1.0, 0.5]}
    )
    assert read_state(store.path)[1].checkpoint_epoch == 6


# --- SIGINT and SIGTERM -----------------------------------------------------------------
class _Run:
    """``python -m flows.online`` in a session of its own, with a simulator call log."""

    def __init__(self, tmp_path: Path, **settings) -> None:
        self.cfg = HarnessConfig(
            workdir=tmp_path, rounds=1, simulations=400, max_epochs=40, **settings
        )
        self.log = tmp_path / "simulator.log"
        write_config(self.cfg, self.log)
        self.argv = cli_command(self.cfg, self.cfg.run_dir, "stop")[3:]
        self.path = self.cfg.run_dir / "stop" / "run.h5"
        self.token = uuid.uuid4().hex
        self.output = tmp_path / "cli.log"
        self.env = {
            **os.environ,
            TOKEN_VAR: self.token,
            "PYTHONPATH": os.pathsep.join([str(BENCHMARKS), os.environ.get("PYTHONPATH", "")]),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, argv: list[str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                argv or [sys.executable, "-m", "flows.online", *self.argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        return self.proc

    def wait_for(self, stage: str, timeout: float = 240.0) -> dict:
        """Poll the run file until the run is inside ``stage``; returns the committed state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.text()
            state = read_state(self.path) if self.path.exists() else None
            if stage == "startup" and time.monotonic() > deadline - timeout + 3:
                return state or {}
            if state:
                _, now = next_stage(state, self.cfg.rounds)
                round1 = state[1]
                if stage == "simulate" and now == "simulate" and len(round1.chunks) >= 2:
                    return state
                if stage == "train" and now == "train" and (round1.checkpoint_epoch or 0) >= 4:
                    return state
            time.sleep(0.05)
        raise AssertionError(f"the run did not reach {stage} in {timeout} s:\n{self.text()}")

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for pid, _ in tagged_processes(self.token):
            os.kill(pid, signal.SIGKILL)


def _window(stage: str) -> dict[str, int]:
    """Settings that keep the run in ``stage`` long enough to be caught there: training
    400 simulations for 40 epochs takes 3 s in batches of 100, 10 s in batches of 25."""
    return {"batch_size": 25} if stage == "train" else {}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "stage", "resume"),
    [
        (signal.SIGINT, "simulate", True),
        (signal.SIGTERM, "train", True),
        (signal.SIGINT, "startup", False),
        (signal.SIGTERM, "simulate", False),
    ],
    ids=["sigint-simulating", "sigterm-training", "sigint-starting", "sigterm-simulating"],
)
def test_a_signal_stops_the_run_promptly_and_it_resumes(tmp_path, signum, stage, resume):
    """SIGINT (``kill -INT``) or SIGTERM (``kill PID``) to the run's process: it stops within
    seconds with status 130, keeps every commit, leaves no Dask or Prefect process, and
    prints the exact command that resumes it."""
    run = _Run(tmp_path, **_window(stage))
    proc = run.start()
    try:
        before = run.wait_for(stage)
        t0 = time.monotonic()
        os.kill(proc.pid, signum)
        status = proc.wait(timeout=120)
        seconds = time.monotonic() - t0
        text = run.text()
        print(f"{signal.Signals(signum).name} while {stage}: exited {status} after {seconds:.1f} s")
        assert status == 130, text[-3000:]
        assert seconds < STOP_LIMIT, f"took {seconds:.1f} s to stop"
        time.sleep(3)  # the Dask processes close when their parent is gone
        assert tagged_processes(run.token) == []
        # The exact command: the same arguments, the run id added when it was not given.
        line = text[text.index("Resume with:") :].splitlines()[1].strip()
        command = shlex.split(line)
        assert command[:3] == ["python", "-m", "flows.online"]
        assert command[3:] == run.argv
        after = read_state(run.path) or {}
        for r, old in before.items():
            assert after[r].covers(old) == []
    finally:
        run.kill()
    if not resume:
        return
    committed = {c for c in after[1].chunks}
    offset = run.log.stat().st_size
    assert run.start([sys.executable, *command[1:]]).wait(timeout=600) == 0, run.text()[-3000:]
    seeds = {derive_seed(run.cfg.seed, 1, "simulate", c): c for c in range(8)}
    again = [seeds[int(s)] for s in run.log.read_text()[offset:].split() if int(s) in seeds]
    assert not committed & set(again), "committed chunks were simulated again"
    store = RunStore.open(run.path)
    assert store.stage(1).name == "DONE"
    if stage == "train":
        assert store.training_summary(1).resumed_from_epoch >= 4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "stage"),
    [(signal.SIGINT, "train"), (signal.SIGTERM, "simulate")],
    ids=["ctrl-c-training", "group-sigterm-simulating"],
)
def test_a_signal_to_the_whole_process_group_stops_the_run_promptly(tmp_path, signum, stage):
    run = _Run(tmp_path, **_window(stage))
    proc = run.start()
    try:
        run.wait_for(stage)
        os.killpg(proc.pid, signum)
        try:
            status = proc.wait(timeout=STOP_LIMIT)
        except subprocess.TimeoutExpired:
            status = None
        assert status == 130, f"status {status}:\n{run.text()[-2000:]}"
        assert "Resume with:" in run.text()
    finally:
        run.kill()


@pytest.mark.slow
def test_a_sigkill_of_the_main_process_alone_leaves_no_dask_process(tmp_path):
    """The OOM killer's way: only the main process dies. The Dask scheduler, nanny and
    worker notice their parent is gone (``sbi_rounds.runtime.watchdog``) and exit."""
    run = _Run(tmp_path)
    proc = run.start()
    try:
        run.wait_for("simulate")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 15
        while tagged_processes(run.token) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = tagged_processes(run.token)
        assert not left, left
    finally:
        run.kill()
