"""Every failure a run can meet is one ``error:`` line, without a traceback (``-v`` shows it).

Most are found before Prefect and Dask start (``sbi_rounds.lifecycle.preflight.preflight``);
the others are run through ``python -m flows.online`` in a second process, as a user would.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch
from small_run import SMALL as SMALL_RUN

from flows.cli.run import main, parse_args

SMALL = [*SMALL_RUN, "--predictive-simulations", "0", "--map-iterations", "0"]


def _argv(run_dir, *extra):
    return ["--xobs", "0.5", "-0.3", *SMALL, "--run-dir", str(run_dir), "--run-id", "r", *extra]


def _tracebacks(text):
    """The tracebacks in ``text``, but those of multiprocessing's resource tracker in Dask's
    worker processes (their noise, not the run's)."""
    blocks = text.split("Traceback (most recent call last):")[1:]
    return [b for b in blocks if "resource_tracker" not in b.split("\n\n")[0][:400]]


def _one_error(capfd, argv, *messages, status=2):
    code = main(argv)
    out, err = capfd.readouterr()
    assert code == status, out + err
    assert err.count("error: ") == 1 and not _tracebacks(err), err
    error = err[err.index("error: ") :]
    for message in messages:
        assert message in error, error
    return error


def _cli(argv, tmp_path, timeout=300, env=()):
    """``python -m flows.online ARGV`` in its own session: ``(status, output)``."""
    with open(tmp_path / "cli.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.online", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **dict(env)},
        )
        try:
            status = proc.wait(timeout=timeout)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the run's leftovers, if any
            except ProcessLookupError:
                pass
            proc.wait()
    return status, (tmp_path / "cli.log").read_text(errors="replace")


# --- found before anything starts ---------------------------------------------------------
def test_a_run_directory_that_cannot_be_created_is_one_line(tmp_path, capfd):
    (tmp_path / "file").write_text("in the way")
    _one_error(
        capfd,
        _argv(tmp_path / "file" / "runs"),
        "cannot create the run directory",
        "is a file, not a directory",
    )
    assert (tmp_path / "file").read_text() == "in the way"


def test_a_run_directory_that_cannot_be_written_is_one_line(tmp_path, capfd):
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        if os.access(directory, os.W_OK):  # root writes anywhere: take a read-only place
            directory = "/proc/sys"
            if os.access(directory, os.W_OK):
                pytest.skip("no directory here that this user cannot write to")
        _one_error(
            capfd,
            _argv(f"{directory}/runs"),
            "cannot write to the run directory",
            "permission denied",
        )
    finally:
        (tmp_path / "ro").chmod(0o700)


def test_a_disk_too_full_for_the_next_round_is_one_line(tmp_path, capfd):
    argv = _argv(tmp_path / "runs")
    argv[argv.index("--simulations-per-round") + 1] = str(10**13)
    _one_error(capfd, argv, "not enough free disk for the run", "needed for round 1")
    assert not (tmp_path / "runs" / "r").exists()


@pytest.fixture
def small_disk(tmp_path):
    """``mount(kilobytes)``: a file system of that size (tmpfs) at ``tmp_path/disk``, unmounted
    after the test; skips where mounting is not permitted."""
    directory = tmp_path / "disk"
    directory.mkdir()
    mounted = []

    def mount(kilobytes):
        if os.geteuid() != 0:
            pytest.skip("mounting a small file system (tmpfs) needs root")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(directory)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small file system here: {done.stderr.strip()}")
        mounted.append(directory)
        return directory

    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_a_really_full_small_disk_is_refused_up_front_in_one_line(small_disk, capfd):
    disk = small_disk(256)
    _one_error(
        capfd,
        _argv(disk / "runs"),
        "not enough free disk for the run in",
        "MB free, about",
        "MB needed for round 1",
    )
    assert list(disk.iterdir()) == []  # nothing created


@pytest.mark.slow
def test_a_disk_that_fills_up_mid_run_is_one_line_and_loses_nothing(small_disk, tmp_path, capfd):
    """Room for the start (the check asks about 2 MB), then another program fills the disk
    while round 1 simulates: its chunks are committed in place (preallocated), and the next
    commit, a copy of the run file, fails with ENOSPC."""
    from sbi_rounds.store import RunStore, Stage

    disk = small_disk(6 * 1024)
    ballast = disk / "ballast"
    argv = _argv(disk / "runs", "--simulator", "simulators:fills_the_disk")
    env = {"SBI_ROUNDS_BALLAST": str(ballast)}
    status, out = _cli(argv, tmp_path, env=env)
    assert status == 1, out[-3000:]
    assert out.count("error: ") == 1 and not _tracebacks(out), out[-3000:]
    error = out[out.index("error: ") :]
    assert "No space left on device" in error, error
    assert "MB free, about" in error and "MB needed for round 1" in error, error
    assert "resume with:" in error
    run_file = disk / "runs" / "r" / "run.h5"
    assert list(run_file.parent.glob("run.h5.tmp-*")) == []
    store = RunStore.open(run_file)  # the round's simulations, committed in place, are kept
    assert store.verify() == [] and store.stage(1) == Stage.SIMULATED
    assert store.pending_chunks(1) == []
    before = run_file.read_bytes()
    # still full: the resume is refused before anything starts, the file left as it was
    _one_error(capfd, argv, "not enough free disk for the run in", "MB free, about")
    assert run_file.read_bytes() == before
    with ballast.open("wb"):  # room again (kept, empty: the simulator fills only once)
        pass
    status, out = _cli(argv, tmp_path, env=env)
    assert status == 0, out[-3000:]
    assert store.stage(1) == Stage.DONE and store.verify() == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_cuda_device_without_a_gpu_is_refused_before_anything_starts(tmp_path, capfd):
    _one_error(
        capfd,
        _argv(tmp_path / "runs", "--device", "cuda"),
        "training.device='cuda' but this machine has no CUDA device",
        "--device cpu",
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("low", ["-inf", "nan"])
def test_a_non_finite_prior_bound_is_refused_and_negative_numbers_can_be_typed(
    tmp_path, capfd, low
):
    _one_error(
        capfd,
        _argv(tmp_path / "runs", "--low", low, "-2", "--high", "2", "2"),
        "box prior bounds must be finite numbers",
    )
    args = parse_args(["--low", "-1e3", "-.5e1", "-2", "--high", "1", "2", "3"])
    assert [float(v) for v in vars(args)["setting:prior.low"]] == [-1000.0, -5.0, -2.0]


def test_a_hanging_start_up_check_times_out_with_a_clear_message(tmp_path, capfd):
    t0 = time.monotonic()
    _one_error(
        capfd,
        _argv(
            tmp_path / "runs", "--simulator", "test_simulation_helpers:hang", "--chunk-timeout", "2"
        ),
        "the simulator did not return within 2 s on 2 prior samples",
        "cluster.chunk_timeout",
    )
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "runs" / "r" / "run.h5").exists()


# --- found while running --------------------------------------------------------------------
@pytest.mark.slow
def test_an_unreachable_prefect_server_is_one_line_before_the_flow_starts(tmp_path):
    status, out = _cli(
        _argv(tmp_path / "runs"), tmp_path, env={"PREFECT_API_URL": "http://127.0.0.1:9/api"}
    )
    assert status == 1, out[-3000:]
    assert out.count("error: ") == 1 and not _tracebacks(out), out[-3000:]
    assert "the Prefect server at http://127.0.0.1:9/api (PREFECT_API_URL) does not answer" in out
    assert "distributed" not in out  # the cluster started ahead was closed without a word


@pytest.mark.slow
def test_a_failing_round_prints_one_error_line_and_prefect_no_traceback(tmp_path):
    """Prefect's own error records of the failed task and flow run (and their tracebacks)
    are shown from -v; without it the command's error line is the only one."""
    argv = _argv(tmp_path / "runs", "--simulator", "simulators:mostly_nan")
    status, out = _cli(argv, tmp_path)
    assert status == 1, out[-3000:]
    assert out.count("error: ") == 1 and not _tracebacks(out), out[-5000:]
    assert out.rstrip().endswith("--resimulate-invalid")
    status, out = _cli([*argv, "-v"], tmp_path)
    assert status == 1 and "raise InvalidRoundError(" in out  # -v: the tracebacks
    assert "Task run failed with exception: InvalidRoundError" in out


@pytest.mark.slow
def test_a_posterior_too_leaky_to_sample_in_time_is_one_error_with_the_remedies(tmp_path):
    argv = _argv(tmp_path / "runs", "--max-sampling-seconds", "1e-6")
    status, out = _cli(argv, tmp_path)
    assert status == 1, out[-3000:]
    assert out.count("error: ") == 1 and not _tracebacks(out), out[-5000:]
    error = out[out.index("error: ") :]
    for part in (
        "round 1's posterior at xobs puts",
        "more than posterior.max_sampling_seconds=1e-06",
        "Check xobs and the prior",
        "--max-sampling-seconds",
        "After fixing it, resume with:",
    ):
        assert part in error, error
    assert "--run-id r" in error.rstrip().splitlines()[-1]


@pytest.mark.parametrize("where", ["copy", "write"])
def test_a_commit_that_runs_out_of_space_leaves_no_copy_behind_and_is_one_line(
    tmp_path, capsys, where
):
    """A file size limit (``RLIMIT_FSIZE``) fails writes like a full disk, in this process."""
    from flows.cli.run import _failure
    from sbi_rounds.store import RunStore

    store = RunStore.create(tmp_path / "run.h5", config={}, fingerprint="f")
    before = store.path.read_bytes()
    size = len(before)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2 if where == "copy" else size + 4096, hard))
    try:
        with pytest.raises(Exception) as raised:  # noqa: PT011 - OSError, or h5py's errors
            store.plan_round(
                1,
                num_simulations=100_000,
                theta_dim=2,
                x_dim=2,
                chunk_size=100,
                num_posterior_samples=10,
                proposal={},
            )
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert list(tmp_path.glob("run.h5.tmp-*")) == []  # no partial copy left behind
    assert store.path.read_bytes() == before
    assert _failure(raised.value, "sbi-rounds run --run-id r") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: could not write") and err.count("error: ") == 1
    assert err.rstrip().endswith("resume with:\n  sbi-rounds run --run-id r")


@pytest.mark.slow
def test_ctrl_c_while_starting_does_not_claim_a_saved_file(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # a temporary one
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.online", *_argv(tmp_path / "runs")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**env, "PREFECT_HOME": str(tmp_path / "prefect")},
    )
    lines = []
    try:
        for line in proc.stdout:  # Prefect's server and Dask start after the input checks
            lines.append(line)
            if "Starting a temporary Prefect server" in line:
                break
        assert not (tmp_path / "runs" / "r" / "run.h5").exists()
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # a Ctrl-C reaches the terminal's whole group
        out = "".join(lines) + proc.communicate(timeout=120)[0]
        seconds = time.monotonic() - t0
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 130, out[-3000:]
    if not (tmp_path / "runs" / "r" / "run.h5").exists():
        assert "nothing was written" in out and "Everything committed is saved" not in out, out
    assert "Resume with:" in out
    assert seconds < 40, (seconds, out[-3000:])
