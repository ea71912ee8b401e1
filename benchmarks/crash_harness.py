"""SIGKILL harness: kill the CLI run's whole process tree at random moments until it finishes.

The harness starts ``python -m flows.online ...`` in its own session, waits for a moment
inside a chosen stage (read from the run file's committed progress while the run writes
it), kills the whole process group with SIGKILL, checks the run file, and restarts the same
command, until the run finishes. Then it compares the result with an uninterrupted run of
the same command (same seed) made first, in the same run of the harness.

After every kill it checks that:

* the run file opens (``RunStore.open``), every dataset in it and in the round files it
  links reads back, and every checksum matches (``RunStore.verify``);
* every stage, chunk, parameter batch, posterior batch, training checkpoint and network
  committed before the kill is still there, with the uninterrupted run's exact values;
* no process of the killed tree survives (every process started by the run carries a
  token in its environment; Prefect's temporary server and the Dask scheduler, nanny and
  worker included);
* the next start removes the ``run.h5.tmp-*`` copies a killed commit left, and simulates
  no chunk that was committed before the kill (the simulator logs each chunk it starts).

Kill moments are biased to land in every stage: Prefect's start-up (before the run's lock is
taken), sampling, simulating, training, building the posterior, the round's checkpoint, and
in the middle of a copy-on-write commit (a ``run.h5.tmp-*`` exists).

    python benchmarks/crash_harness.py                      # 3 rounds x 400, >= 30 kills
    python benchmarks/crash_harness.py --json benchmarks/out/crash_harness.json
    python benchmarks/crash_harness.py --rounds 1 --simulations 200 --kills-per-stage 1

``tests/test_crash_safety.py`` runs a reduced version.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sbi_rounds.store.serialize import read_key

__all__ = [
    "TOKEN_VAR",
    "HarnessConfig",
    "HarnessFailure",
    "KillRecord",
    "RoundState",
    "cli_command",
    "logged_slow_linear_gaussian",
    "main",
    "next_stage",
    "read_state",
    "run_harness",
    "tagged_processes",
    "write_config",
]

HERE = Path(__file__).resolve().parent
#: Environment variable carrying the token every process of one started run inherits.
TOKEN_VAR = "SBI_ROUNDS_HARNESS_TOKEN"
#: Labels of where a kill landed, in run order ("commit": a copy-on-write commit in flight).
STAGES = (
    "startup",
    "sample",
    "simulate",
    "append",
    "train",
    "posterior",
    "checkpoint",
    "diagnose",
    "finish",
)
_STAGE_AFTER = {  # committed stage value -> the stage the run works on next
    0: "sample",
    1: "sample",  # PLANNED: parameters being drawn
    2: "simulate",  # SAMPLED
    3: "append",  # SIMULATED
    4: "train",  # APPENDED
    5: "posterior",  # TRAINED
    6: "checkpoint",  # POSTERIOR
}
DONE = 7


class HarnessFailure(AssertionError):
    """A crash-safety guarantee did not hold."""


# --- the simulator ----------------------------------------------------------------------
def logged_slow_linear_gaussian(
    theta: Any, seconds_per_simulation: float = 0.01, log: str = "", seed: int = 0
) -> Any:
    """``slow_linear_gaussian`` that first appends the chunk's seed to the file ``log``.

    The seed identifies the chunk (``derive_seed(run_seed, round, "simulate", chunk)``), so
    the log counts how often each chunk was started.
    """
    from sbi_rounds.examples import slow_linear_gaussian

    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{seed}\n".encode())
        finally:
            os.close(fd)
    return slow_linear_gaussian(theta, seconds_per_simulation)


# --- reading a run file while it is written -----------------------------------------------
@dataclass(frozen=True)
class RoundState:
    """What one round has committed."""

    stage: int
    theta_done: int
    chunks: frozenset[int]
    num_chunks: int
    samples_done: int
    checkpoint_epoch: int | None
    network: bool
    diagnosed: bool = False

    def covers(self, before: RoundState) -> list[str]:
        """What ``before`` committed that this state lost (empty: nothing)."""
        lost = []
        if self.stage < before.stage:
            lost.append(f"stage {before.stage} -> {self.stage}")
        if self.theta_done < before.theta_done:
            lost.append(f"theta_done {before.theta_done} -> {self.theta_done}")
        if not before.chunks <= self.chunks:
            lost.append(f"chunks {sorted(before.chunks - self.chunks)}")
        if self.samples_done < before.samples_done:
            lost.append(f"samples_done {before.samples_done} -> {self.samples_done}")
        if before.network and not self.network:
            lost.append("network")
        if before.diagnosed and not self.diagnosed:
            lost.append("diagnostics")
        if before.checkpoint_epoch is not None and not self.network:
            if self.checkpoint_epoch is None or self.checkpoint_epoch < before.checkpoint_epoch:
                lost.append(
                    f"training checkpoint epoch {before.checkpoint_epoch} -> "
                    f"{self.checkpoint_epoch}"
                )
        return lost


def _checkpoint_epoch(group: h5py.Group) -> int | None:
    if "training_checkpoint" not in group:
        return None
    try:  # only the epoch is read, not the weights
        return int(read_key(group["training_checkpoint"], "epoch"))
    except KeyError:
        return None


def read_state(path: Path) -> dict[int, RoundState] | None:
    """The committed progress of every round, or None if the file cannot be read now."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            out = {}
            for name, g in f["rounds"].items():
                out[int(name)] = RoundState(
                    stage=int(g["stage"][0]),
                    theta_done=int(g["theta_done"][0]),
                    chunks=frozenset(int(i) for i in np.flatnonzero(g["chunk_done"][()])),
                    num_chunks=int(g.attrs["num_chunks"]),
                    samples_done=int(g["samples_done"][0]),
                    checkpoint_epoch=_checkpoint_epoch(g),
                    network="network" in g,
                    diagnosed="diagnostics" in g.attrs,
                )
            return out
    except (OSError, KeyError, ValueError, RuntimeError):
        return None


def next_stage(
    state: dict[int, RoundState] | None, rounds: int, diagnose: bool = True
) -> tuple[int, str]:
    """``(round, stage)`` the run works on next, judged by what it has committed.

    With ``diagnose``, a finished round is followed by its posterior checks (the
    ``diagnostics`` round attribute) before the next round is planned.
    """
    state = state or {}
    for r in range(1, rounds + 1):
        s = state.get(r)
        if s is None:
            if diagnose and r > 1 and not state[r - 1].diagnosed:
                return r - 1, "diagnose"
            return r, "sample"
        if s.stage < DONE:
            return r, _STAGE_AFTER[s.stage]
    if diagnose and rounds in state and not state[rounds].diagnosed:
        return rounds, "diagnose"
    return rounds, "finish"


def _lock_pid(run_dir: Path) -> int | None:
    try:
        raw = (run_dir / "run.lock").read_text()
        return int(json.loads(raw)["pid"]) if raw else None
    except (OSError, ValueError, KeyError):
        return None


def _stale(run_dir: Path) -> list[str]:
    try:
        return sorted(p.name for p in run_dir.glob("run.h5.tmp-*"))
    except OSError:
        return []


# --- processes ----------------------------------------------------------------------------
def tagged_processes(token: str) -> list[tuple[int, str]]:
    """Live (non-zombie) processes whose environment carries ``token``: ``(pid, command)``."""
    found = []
    needle = f"{TOKEN_VAR}={token}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            if state in (b"Z", b"X"):
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:160]
        except OSError:
            continue
        found.append((int(entry), cmd))
    return found


def _wait_gone(token: str, timeout: float) -> float:
    """Wait up to ``timeout`` s until no tagged process lives; returns the seconds waited."""
    t0 = time.monotonic()
    while tagged_processes(token) and time.monotonic() - t0 < timeout:
        time.sleep(0.1)
    return time.monotonic() - t0


def _kill_leftovers(token: str) -> list[tuple[int, str]]:
    """SIGKILL every process still carrying ``token`` (ones the harness started), by PID."""
    left = tagged_processes(token)
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def _snapshot_source(target: Path) -> Path:
    """Copy the project's packages (and this harness) to ``target``: every start of the run
    imports this copy, so edits made to the working tree meanwhile do not mix versions."""
    import shutil

    root = HERE.parent
    if target.exists():
        shutil.rmtree(target)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("flows", "sbi_rounds", "tasks"):
        shutil.copytree(root / package, target / package, ignore=ignore)
    shutil.copy2(Path(__file__).resolve(), target / "crash_harness.py")
    return target


# --- the harness --------------------------------------------------------------------------
@dataclass
class HarnessConfig:
    """What the harness runs and how it kills it."""

    workdir: Path
    #: The run's method; a vector-field method (tfmpe, tnpse) gets its small network's
    #: settings and fewer samples to set its truncation threshold (each an ODE solve).
    method: str = "snpe"
    rounds: int = 3
    simulations: int = 400
    chunk_size: int = 50
    seconds_per_simulation: float = 0.01
    max_epochs: int = 20
    checkpoint_every: int = 2
    batch_size: int = 100
    num_samples: int = 300
    workers: int = 1
    seed: int = 0
    kill_seed: int = 1
    #: Kills aimed at each stage of each round (startup kills come on top, see below).
    kills_per_stage: dict[str, int] = field(
        default_factory=lambda: {
            "sample": 1,
            "simulate": 2,
            "train": 2,
            "commit": 1,
            "posterior": 1,
            "checkpoint": 1,
            "diagnose": 1,
        }
    )
    #: Every n-th restart is killed during Prefect's start-up (0: never).
    startup_every: int = 4
    reference: bool = True
    timeout: float = 3600.0
    verbose: bool = True

    @property
    def run_dir(self) -> Path:
        return self.workdir / "runs"

    @property
    def config_file(self) -> Path:
        return self.workdir / "harness.yaml"


def cli_command(cfg: HarnessConfig, run_dir: Path, run_id: str) -> list[str]:
    """The CLI command of the harness's run (the same for every restart)."""
    return [
        sys.executable,
        "-m",
        "flows.online",
        "--config",
        str(cfg.config_file),
        "--xobs",
        "0.5",
        "-0.3",
        "--rounds",
        str(cfg.rounds),
        "--simulations-per-round",
        str(cfg.simulations),
        "--max-epochs",
        str(cfg.max_epochs),
        "--logger",
        "none",
        "--no-progress",
        "--workers",
        str(cfg.workers),
        "--seed",
        str(cfg.seed),
        "--run-dir",
        str(run_dir),
        "--run-id",
        run_id,
    ]


#: Methods whose network is a vector field (no ``num_transforms``; see :func:`write_config`).
VECTOR_FIELD_METHODS = ("tfmpe", "tnpse")


def write_config(cfg: HarnessConfig, log: Path) -> None:
    """The settings file; the simulator log path is a simulator keyword argument."""
    text = (
        "simulator:\n"
        "  path: crash_harness:logged_slow_linear_gaussian\n"
        f"  kwargs: {{seconds_per_simulation: {cfg.seconds_per_simulation}, log: '{log}'}}\n"
        f"cluster: {{chunk_size: {cfg.chunk_size}}}\n"
        f"training: {{checkpoint_every: {cfg.checkpoint_every}, checkpoint_min_seconds: 0, "
        f"batch_size: {cfg.batch_size}}}\n"
        f"method: {cfg.method}\n"
        f"posterior: {{num_samples: {cfg.num_samples}}}\n"
    )
    if cfg.method in VECTOR_FIELD_METHODS:
        text += (
            "network: {hidden_features: 20}\n"
            f"{cfg.method}: {{num_layers: 2, num_samples_to_estimate: 500}}\n"
        )
    else:
        text += "network: {hidden_features: 20, num_transforms: 2}\n"
    cfg.config_file.write_text(text)


@dataclass
class KillRecord:
    """One kill and what the checks found."""

    index: int
    target: str
    stage: str
    round: int
    mid_commit: bool
    seconds_after_start: float
    lock_taken: bool
    chunks_in_flight: int = 0
    simulations_lost: int = 0
    stale_left: list[str] = field(default_factory=list)
    processes_at_kill: int = 0
    processes_left: int = 0
    # of the restart that follows:
    seconds_to_lock: float | None = None
    seconds_to_progress: float | None = None


@dataclass
class _Session:
    """One start of the command."""

    proc: subprocess.Popen[bytes]
    token: str
    started: float
    log_offset: int
    state_at_start: dict[int, RoundState] | None
    inode_at_start: int | None
    stale_at_start: list[str] = field(default_factory=list)
    lock_at: float | None = None
    progress_at: float | None = None
    stale_gone_at: float | None = None
    ended: float | None = None


class _Harness:
    def __init__(self, cfg: HarnessConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.kill_seed)
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        self.sim_log = cfg.workdir / "simulator.log"
        self.ref_log = cfg.workdir / "reference-simulator.log"
        self.run_id = "crash"
        self.path = cfg.run_dir / self.run_id / "run.h5"
        self.src = _snapshot_source(cfg.workdir / "src")
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(self.src), os.environ.get("PYTHONPATH", "")) if p
            ),
            # A Prefect home of its own: its database is not shared with other runs.
            "PREFECT_HOME": str(cfg.workdir / "prefect-home"),
        }
        self.env.pop("PREFECT_API_URL", None)
        self.kills: list[KillRecord] = []
        self.sessions: list[_Session] = []
        self.post_kill_states: list[dict[int, RoundState]] = []
        self.aimed: Counter[tuple[int, str]] = Counter()
        self.startup_times: list[float] = [15.0]
        self.reference_seconds: float | None = None
        self.stale_removals = 0
        self.reference_path: Path | None = None
        self.seeds: dict[int, tuple[int, int]] = {}
        self.logs: list[str] = []

    def say(self, text: str) -> None:
        if self.cfg.verbose:
            print(f"[harness {time.strftime('%H:%M:%S')}] {text}", flush=True)

    # --- starting and stopping ----------------------------------------------------------
    def _start(self, run_dir: Path, run_id: str, log_file: Path) -> _Session:
        token = uuid.uuid4().hex
        out = open(self.cfg.workdir / f"session-{len(self.logs):03d}.log", "wb")  # noqa: SIM115
        self.logs.append(out.name)
        path = run_dir / run_id / "run.h5"
        offset = log_file.stat().st_size if log_file.exists() else 0
        try:
            inode = path.stat().st_ino
        except OSError:
            inode = None
        proc = subprocess.Popen(
            cli_command(self.cfg, run_dir, run_id),
            env={**self.env, TOKEN_VAR: token},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.src,
        )
        out.close()
        return _Session(
            proc,
            token,
            time.monotonic(),
            offset,
            read_state(path),
            inode,
            stale_at_start=_stale(path.parent),
        )

    def _kill(self, session: _Session) -> tuple[int, int]:
        """SIGKILL the session's process group; returns (processes at kill, left after)."""
        at_kill = len(tagged_processes(session.token))
        try:
            os.killpg(session.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        session.proc.wait()
        _wait_gone(session.token, timeout=10.0)
        left = _kill_leftovers(session.token)
        if left:
            self.say(f"processes outside the group survived the kill: {left}")
        return at_kill, len(left)

    # --- the uninterrupted reference ------------------------------------------------------
    def reference(self) -> None:
        run_dir = self.cfg.workdir / "reference"
        write_config(self.cfg, self.ref_log)
        self.say("uninterrupted reference run")
        t0 = time.monotonic()
        session = self._start(run_dir, self.run_id, self.ref_log)
        try:
            rc = session.proc.wait(timeout=self.cfg.timeout)
        finally:
            self._cleanup(session)
        self.reference_seconds = time.monotonic() - t0
        if rc != 0:
            raise HarnessFailure(f"the reference run failed with status {rc}; see {self.logs[-1]}")
        self.reference_path = run_dir / self.run_id / "run.h5"
        self.say(f"reference done in {self.reference_seconds:.1f} s")

    def _cleanup(self, session: _Session) -> None:
        if session.proc.poll() is None:
            os.killpg(session.proc.pid, signal.SIGKILL)
            session.proc.wait()
        _wait_gone(session.token, timeout=10.0)
        _kill_leftovers(session.token)

    # --- choosing and waiting for a kill moment -------------------------------------------
    def _target(self, restart: int) -> tuple[int, str]:
        """Where to kill next: ``(round, stage)``; ``(0, "startup")`` or ``(0, "none")``."""
        cfg = self.cfg
        if cfg.startup_every and restart % cfg.startup_every == cfg.startup_every - 1:
            return 0, "startup"
        r, stage = next_stage(read_state(self.path), cfg.rounds)
        if stage == "finish":
            return 0, "none"
        order = list(STAGES[1:-1])
        for rr in range(r, cfg.rounds + 1):
            first = order.index(stage) if rr == r else 0
            for s in order[first:]:
                if s == "train" and self.aimed[(rr, "commit")] < cfg.kills_per_stage.get(
                    "commit", 0
                ):
                    return rr, "commit"
                if self.aimed[(rr, s)] < cfg.kills_per_stage.get(s, 0):
                    return rr, s
        return 0, "none"

    def _estimated(self, stage: str) -> float:
        """A rough duration of a stage, from the reference run (seconds)."""
        if stage not in ("simulate", "train"):
            return 0.0
        ref = self.reference_path
        if ref is None or not ref.exists():
            return {"simulate": 4.0, "train": 20.0}[stage]
        from sbi_rounds.store import RunStore

        store = RunStore.open(ref)
        return float(np.nanmedian([store.timings(r).by_stage()[stage] for r in store.rounds()]))

    def _wait_and_kill(self, session: _Session, target: tuple[int, str]) -> KillRecord | None:
        """Poll until the target moment, then kill. None: the run ended on its own."""
        cfg = self.cfg
        run_dir = self.path.parent
        t_round, t_stage = target
        if t_stage in ("startup", "none"):
            aim = (cfg.rounds + 1, 0)  # never reached: these wait for the start or the end
        else:
            aim = (t_round, STAGES.index("train" if t_stage == "commit" else t_stage))
        own_copy = run_dir / f"run.h5.tmp-{session.proc.pid}"
        startup_at = session.started + self.rng.uniform(
            0.3, 0.9 * statistics.median(self.startup_times)
        )
        kill_at: float | None = None
        last = session.state_at_start
        last_read = 0.0
        while True:
            if session.proc.poll() is not None:
                self._note_progress(session, read_state(self.path))
                return None
            now = time.monotonic()
            if t_stage == "commit" and kill_at is not None:
                # In training: poll the directory only, every 2 ms, for our commit's copy.
                if own_copy.exists():
                    return self._do_kill(session, target, last)
                time.sleep(0.002)
                if now - last_read < 0.25:
                    continue
            state = read_state(self.path)
            last_read = now
            if state is not None:
                last = state
            self._note_progress(session, state)
            locked = _lock_pid(run_dir) == session.proc.pid
            if locked and session.lock_at is None:
                session.lock_at = now
            if locked and session.stale_at_start and session.stale_gone_at is None:
                if not set(session.stale_at_start) & set(_stale(run_dir)):
                    session.stale_gone_at = now
            if t_stage == "startup":
                if now >= startup_at or locked:
                    return self._do_kill(session, target, last)
                time.sleep(0.02)
                continue
            if not locked or t_stage == "none":
                time.sleep(0.05)
                continue
            r, stage = next_stage(last, cfg.rounds)
            where = (r, STAGES.index(stage))
            if where > aim:  # the aimed moment passed: kill where the run is now
                return self._do_kill(session, target, last)
            started = self.sim_log.exists() and self.sim_log.stat().st_size > session.log_offset
            if where == aim and (t_stage != "simulate" or started):
                # (simulate: once a chunk runs, not while the Dask cluster starts)
                if kill_at is None:
                    kill_at = now + self.rng.uniform(0.0, 0.8 * self._estimated(t_stage))
                if t_stage != "commit" and now >= kill_at:
                    return self._do_kill(session, target, last)
            short = t_stage in ("sample", "posterior", "checkpoint") and where[0] == aim[0]
            time.sleep(0.005 if short else 0.02)

    def _note_progress(self, session: _Session, state: dict[int, RoundState] | None) -> None:
        if session.progress_at is not None:
            return
        try:
            inode = self.path.stat().st_ino
        except OSError:
            inode = None
        changed = (state is not None and state != (session.state_at_start or {})) or (
            inode is not None and inode != session.inode_at_start
        )
        if changed:
            session.progress_at = time.monotonic()

    def _do_kill(
        self, session: _Session, target: tuple[int, str], before: dict[int, RoundState] | None
    ) -> KillRecord:
        now = time.monotonic()
        at_kill, left = self._kill(session)
        run_dir = self.path.parent
        after = read_state(self.path)
        lock_taken = _lock_pid(run_dir) == session.proc.pid
        stale = _stale(run_dir)
        r, stage = next_stage(after, self.cfg.rounds)
        if not lock_taken:
            stage = "startup"
        if session.lock_at is not None:
            self.startup_times.append(session.lock_at - session.started)
        record = KillRecord(
            index=len(self.kills) + 1,
            target=target[1],
            stage=stage,
            round=r,
            mid_commit=bool(stale) and lock_taken,
            seconds_after_start=now - session.started,
            lock_taken=lock_taken,
            stale_left=stale,
            processes_at_kill=at_kill,
            processes_left=left,
        )
        self.aimed[target] += 1
        self._verify(before, after, record)
        self.kills.append(record)
        self.post_kill_states.append(after or {})
        self.say(
            f"kill {record.index}: aimed at {target[1]} of round {target[0]}, hit {stage} "
            f"of round {r}"
            f"{' (commit in flight)' if record.mid_commit else ''} after "
            f"{record.seconds_after_start:.1f} s; {at_kill} processes killed, {left} left"
        )
        return record

    # --- checks -----------------------------------------------------------------------------
    def _verify(
        self,
        before: dict[int, RoundState] | None,
        after: dict[int, RoundState] | None,
        record: KillRecord,
    ) -> None:
        from sbi_rounds.store import RunStore

        if record.processes_left:
            raise HarnessFailure(f"kill {record.index}: {record.processes_left} processes survived")
        if not self.path.exists():
            if before:
                raise HarnessFailure(f"kill {record.index}: the run file disappeared")
            return
        store = RunStore.open(self.path)  # raises RunFileError if it does not open
        if after is None:
            raise HarnessFailure(f"kill {record.index}: the run file's rounds cannot be read")
        _read_everything(self.path)
        damage = store.verify()  # checksums of the run file and its round files
        if damage:
            raise HarnessFailure(f"kill {record.index}: damaged: {[str(d) for d in damage]}")
        for r, old in (before or {}).items():
            if r not in after:
                raise HarnessFailure(f"kill {record.index}: round {r} disappeared")
            lost = after[r].covers(old)
            if lost:
                raise HarnessFailure(f"kill {record.index}: round {r} lost {lost}")
        for r in after:
            if after[r].checkpoint_epoch is not None or after[r].network:
                store.checkpoint_sink(r).load()  # the nested checkpoint deserializes
        if self.reference_path is not None:
            _compare_committed(store, after, RunStore.open(self.reference_path), record.index)

    # --- the run ------------------------------------------------------------------------
    def run(self) -> None:
        cfg = self.cfg
        if cfg.reference:
            self.reference()
        write_config(cfg, self.sim_log)
        self._seed_table()
        t0 = time.monotonic()
        while True:
            if time.monotonic() - t0 > cfg.timeout:
                raise HarnessFailure(f"the run did not finish within {cfg.timeout:.0f} s")
            session = self._start(cfg.run_dir, self.run_id, self.sim_log)
            self.sessions.append(session)
            target = self._target(len(self.sessions) - 1)
            try:
                record = self._wait_and_kill(session, target)
            finally:
                self._cleanup(session)
            session.ended = time.monotonic()
            self._note_resume(session)
            if record is None:
                if session.proc.returncode != 0:
                    raise HarnessFailure(
                        f"the run ended with status {session.proc.returncode}; see {self.logs[-1]}"
                    )
                break
        self.total_seconds = time.monotonic() - t0
        self._check_chunks()
        if cfg.reference:
            self._compare_final()

    def _note_resume(self, session: _Session) -> None:
        """Fill in the resume figures of the kill that came before ``session``."""
        if session.stale_at_start and session.lock_at is not None:
            if session.stale_gone_at is not None:
                self.stale_removals += 1
            elif self._lock_held_long(session):
                raise HarnessFailure(
                    f"stale copies {session.stale_at_start} were not removed at the restart"
                )
        index = len(self.sessions) - 2  # kill k ended session k
        if index < 0:
            return
        prev = self.kills[index]
        if session.lock_at is not None:
            prev.seconds_to_lock = session.lock_at - session.started
        if session.progress_at is not None:
            prev.seconds_to_progress = session.progress_at - session.started

    def _lock_held_long(self, session: _Session) -> bool:
        """Whether the session held the lock long enough to have cleaned up (1 s)."""
        end = session.ended if session.ended is not None else time.monotonic()
        return session.lock_at is not None and end - session.lock_at > 1.0

    # --- chunk accounting ------------------------------------------------------------------
    def _seed_table(self) -> None:
        from sbi_rounds.seeding import derive_seed

        chunks = -(-self.cfg.simulations // self.cfg.chunk_size)
        for r in range(1, self.cfg.rounds + 1):
            for c in range(chunks):
                self.seeds[derive_seed(self.cfg.seed, r, "simulate", c)] = (r, c)

    def _segments(self) -> list[list[tuple[int, int]]]:
        raw = self.sim_log.read_bytes() if self.sim_log.exists() else b""
        bounds = [s.log_offset for s in self.sessions] + [len(raw)]
        out = []
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            lines = raw[a:b].decode().split()
            out.append([self.seeds[int(s)] for s in lines if int(s) in self.seeds])
        return out

    def _check_chunks(self) -> None:
        segments = self._segments()
        for k, record in enumerate(self.kills):
            committed = {(r, c) for r, s in self.post_kill_states[k].items() for c in s.chunks}
            started_before = set(segments[k])
            lost = started_before - committed
            record.chunks_in_flight = len(lost)
            record.simulations_lost = sum(self._chunk_len(r, c) for r, c in lost)
            later = {c for seg in segments[k + 1 :] for c in seg}
            redone = committed & later
            if redone:
                raise HarnessFailure(
                    f"after kill {record.index}, committed chunks {sorted(redone)} were "
                    "simulated again"
                )
        counts = Counter(c for seg in segments for c in seg)
        self.chunk_calls = counts

    def _chunk_len(self, r: int, c: int) -> int:
        start = c * self.cfg.chunk_size
        return min(self.cfg.chunk_size, self.cfg.simulations - start)

    # --- the final answer ------------------------------------------------------------------
    def _compare_final(self) -> None:
        from sbi_rounds.store import RunStore

        a, b = RunStore.open(self.path), RunStore.open(self.reference_path)
        self.identical = _identical(a, b)
        if not all(self.identical.values()):
            raise HarnessFailure(
                f"the interrupted run differs from the reference: {self.identical}"
            )

    def summary(self) -> dict[str, Any]:
        kills = self.kills
        hits = Counter(k.stage for k in kills)
        commits = sum(k.mid_commit for k in kills)
        lost = [k.simulations_lost for k in kills]
        lock = [k.seconds_to_lock for k in kills if k.seconds_to_lock is not None]
        progress = [k.seconds_to_progress for k in kills if k.seconds_to_progress is not None]
        return {
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_average_at_end": os.getloadavg(),
            },
            "settings": {
                k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.cfg).items()
            },
            "kills": len(kills),
            "stages_hit": {s: hits.get(s, 0) for s in STAGES if hits.get(s, 0)},
            "mid_commit_kills": commits,
            "stale_copies_removed_at_restart": self.stale_removals,
            "simulations_lost_per_kill": {
                "mean": float(np.mean(lost)) if lost else 0.0,
                "max": max(lost, default=0),
                "total": sum(lost),
                "histogram": dict(Counter(lost)),
            },
            "seconds_to_lock_after_restart": _stats(lock),
            "seconds_to_first_progress_after_restart": _stats(progress),
            "reference_seconds": self.reference_seconds,
            "interrupted_total_seconds": getattr(self, "total_seconds", None),
            "chunk_calls": {
                "chunks": len(getattr(self, "chunk_calls", {})),
                "max_calls": max(getattr(self, "chunk_calls", {}).values(), default=0),
            },
            "identical_to_reference": getattr(self, "identical", None),
            "records": [asdict(k) for k in kills],
        }


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "n": len(values),
        "median": float(np.median(values)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
    }


def _read_everything(path: Path) -> None:
    """Read every dataset and attribute of the file with plain h5py, and every dataset of
    the round files it links to (a round's simulations file only once its first chunk is
    committed)."""

    def visit(name: str, obj: Any) -> None:
        for value in obj.attrs.values():
            _ = value
        if isinstance(obj, h5py.Dataset):
            obj[()]

    with h5py.File(path, "r", locking=False) as f:
        f.visititems(visit)
        for g in f["rounds"].values():
            for name in g:
                link = g.get(name, getlink=True)
                if not isinstance(link, h5py.ExternalLink):
                    continue
                if name == "x" and not g["chunk_done"][()].any():
                    continue
                g[name][()]


def _compare_committed(store: Any, state: dict[int, RoundState], ref: Any, index: int) -> None:
    """Everything committed equals the uninterrupted run's values."""
    import torch

    for r, s in state.items():
        theta, x, valid = store.read_simulations(r)
        rtheta, rx, rvalid = ref.read_simulations(r)
        if not np.array_equal(theta[: s.theta_done], rtheta[: s.theta_done]):
            raise HarnessFailure(f"kill {index}: round {r} parameters differ from the reference")
        info = store.round_info(r)
        for c in s.chunks:
            a, b = info.chunk_bounds(c)
            if not (np.array_equal(x[a:b], rx[a:b]) and np.array_equal(valid[a:b], rvalid[a:b])):
                raise HarnessFailure(f"kill {index}: round {r} chunk {c} differs")
        if not np.array_equal(store.read_samples(r), ref.read_samples(r)[: s.samples_done]):
            raise HarnessFailure(f"kill {index}: round {r} posterior samples differ")
        if s.network:
            w, _ = store.read_network(r)
            rw, _ = ref.read_network(r)
            if not all(torch.equal(w[k], rw[k]) for k in rw):
                raise HarnessFailure(f"kill {index}: round {r} network weights differ")


def _identical(a: Any, b: Any) -> dict[str, bool]:
    import torch

    out = {"rounds": a.rounds() == b.rounds()}
    for r in b.rounds():
        ta, xa, va = a.read_simulations(r)
        tb, xb, vb = b.read_simulations(r)
        wa, _ = a.read_network(r)
        wb, _ = b.read_network(r)
        out[f"round {r} simulations"] = bool(
            np.array_equal(ta, tb) and np.array_equal(xa, xb) and np.array_equal(va, vb)
        )
        out[f"round {r} weights"] = wa.keys() == wb.keys() and all(
            torch.equal(wa[k], wb[k]) for k in wb
        )
        out[f"round {r} posterior samples"] = bool(
            np.array_equal(a.read_samples(r), b.read_samples(r))
        )
    return out


def run_harness(cfg: HarnessConfig) -> dict[str, Any]:
    """Run the harness; raises :class:`HarnessFailure` if a guarantee broke.

    Returns:
        The figures (see :meth:`_Harness.summary`).
    """
    harness = _Harness(cfg)
    harness.run()
    return harness.summary()


def format_summary(s: dict[str, Any]) -> str:
    """The figures as Markdown."""
    lost = s["simulations_lost_per_kill"]
    lock, prog = s["seconds_to_lock_after_restart"], s["seconds_to_first_progress_after_restart"]
    lines = [
        f"kills: {s['kills']} (of which {s['mid_commit_kills']} with a copy-on-write commit "
        f"in flight; the next start removed the copy left {s['stale_copies_removed_at_restart']} "
        "times)",
        "",
        "| stage hit | kills |",
        "| --- | ---: |",
        *(f"| {k} | {v} |" for k, v in s["stages_hit"].items()),
        "",
        f"simulations lost per kill: mean {lost['mean']:.1f}, max {lost['max']}, "
        f"total {lost['total']} (histogram {lost['histogram']})",
    ]
    if lock:
        lines.append(
            f"restart -> lock taken (Prefect start + flow start): median {lock['median']:.1f} s "
            f"(min {lock['min']:.1f}, max {lock['max']:.1f}, n={lock['n']})"
        )
    if prog:
        lines.append(
            f"restart -> first new commit: median {prog['median']:.1f} s (min "
            f"{prog['min']:.1f}, max {prog['max']:.1f}, n={prog['n']})"
        )
    lines.append(
        f"reference run {s['reference_seconds']:.0f} s; interrupted run, all sessions "
        f"{s['interrupted_total_seconds']:.0f} s"
        if s["reference_seconds"]
        else f"interrupted run, all sessions {s['interrupted_total_seconds']:.0f} s"
    )
    lines.append(f"identical to the uninterrupted run: {s['identical_to_reference']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: run the harness and print (and optionally save) its figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    p.add_argument("--method", default="snpe", help="the run's method (default: snpe)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--simulations", type=int, default=400)
    p.add_argument("--max-epochs", type=int, default=20)
    p.add_argument("--kills-per-stage", type=int, help="the same number for every stage")
    p.add_argument("--startup-every", type=int, default=4)
    p.add_argument("--kill-seed", type=int, default=1)
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="crash-harness-"))
    cfg = HarnessConfig(
        workdir=workdir,
        method=args.method,
        rounds=args.rounds,
        simulations=args.simulations,
        max_epochs=args.max_epochs,
        startup_every=args.startup_every,
        kill_seed=args.kill_seed,
        reference=not args.no_reference,
    )
    if args.kills_per_stage is not None:
        cfg.kills_per_stage = {k: args.kills_per_stage for k in cfg.kills_per_stage}
    summary = run_harness(cfg)
    print(format_summary(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
