"""Bad input through the command line: a clear error, exit status 2, and nothing on disk lost.

Library-level checks of the same errors are in test_config, test_store, test_stages and
test_locking; these go through ``flows.online.main`` (in process, against the session's
Prefect server) or ``python -m flows.online`` (a real second process).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
from small_run import SMALL as SMALL_RUN

from flows.cli.run import main
from sbi_rounds.store import FORMAT_VERSION, RunStore

SMALL = [*SMALL_RUN, "--calibration-simulations", "0"]

HELPERS = '''
"""User code with mistakes, for the bad-input tests."""
import numpy as np
import torch
from sbi.utils import BoxUniform


def zero_width_prior():
    return BoxUniform(torch.tensor([0.0, -1.0]), torch.tensor([0.0, 1.0]))


def negative_width_prior():
    return BoxUniform(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0]))


def not_a_distribution():
    return [0.0, 1.0]


def three_summaries(theta):
    return torch.cat([theta, theta[:, :1]], dim=1)


def returns_none(theta):
    return None


def returns_text(theta):
    return np.array([["a", "b"]] * len(theta))
'''


def _argv(run_dir, *extra, run_id="base", xobs=("0.5", "-0.3")):
    return ["--xobs", *xobs, *SMALL, "--run-dir", str(run_dir), "--run-id", run_id, *extra]


@pytest.fixture(scope="module")
def helpers_dir(tmp_path_factory):
    """A directory holding ``bad_input_helpers.py``, a module of broken user code."""
    directory = tmp_path_factory.mktemp("helpers")
    (directory / "bad_input_helpers.py").write_text(HELPERS)
    return directory


@pytest.fixture
def helpers(helpers_dir):
    """The broken user code's module name, importable in this process."""
    sys.path.insert(0, str(helpers_dir))
    yield "bad_input_helpers"
    sys.path.remove(str(helpers_dir))
    sys.modules.pop("bad_input_helpers", None)


@pytest.fixture(scope="module")
def finished_run(prefect_server, tmp_path_factory):
    """A small finished run made through the command line."""
    runs = tmp_path_factory.mktemp("finished")
    assert main(_argv(runs)) == 0
    return runs / "base"


@pytest.fixture
def run_copy(finished_run, tmp_path):
    """A copy of the finished run's directory, which a test may damage."""
    copy = tmp_path / "runs" / "base"
    shutil.copytree(finished_run, copy)
    return copy


def _snapshot(directory):
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _fails(capfd, argv, *messages, status=2):
    """Run the CLI; check the status and that stderr ends with an error naming ``messages``."""
    code = main(argv)
    out, err = capfd.readouterr()
    assert code == status, out + err
    error = err[err.rindex("error: ") :]
    for message in messages:
        assert message in error, error
    return out, err


# --- resuming with other settings ---------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "field", "line"),
    [
        (
            ["--simulator", "sbi_rounds.examples:two_moons"],
            "simulator",
            "simulator.path: 'sbi_rounds.examples:linear_gaussian' -> "
            "'sbi_rounds.examples:two_moons'",
        ),
        (
            ["--low", "-1", "-1", "--high", "1", "1"],
            "prior",
            "prior.low: [-2.0, -2.0] -> [-1.0, -1.0]",
        ),
        (["--method", "snle"], "method", "method: 'snpe' -> 'snle'"),
        (["--hidden-features", "11"], "network", "network.hidden_features: 10 -> 11"),
        (["--seed", "1"], "seed", "seed: 0 -> 1"),
    ],
)
def test_resuming_with_other_settings_is_refused_and_changes_nothing(
    run_copy, capfd, flags, field, line
):
    before = _snapshot(run_copy)
    _fails(
        capfd,
        _argv(run_copy.parent, *flags),
        "was started with other settings",
        line,
        "--run-id NEW_ID",
        f"--allow-change {field}",
        "Nothing in the run file was changed",
    )
    assert _snapshot(run_copy) == before  # byte for byte, lock file included


def test_resuming_with_another_xobs_is_refused_and_allow_change_accepts_it(run_copy, capfd):
    before = _snapshot(run_copy)
    _fails(
        capfd,
        _argv(run_copy.parent, xobs=("0.4", "-0.3")),
        "xobs: [0.5, -0.3] -> [0.4, -0.3]",
        "--allow-change xobs",
    )
    assert _snapshot(run_copy) == before
    assert main(_argv(run_copy.parent, "--allow-change", "xobs", xobs=("0.4", "-0.3"))) == 0
    store = RunStore.open(run_copy / "run.h5")
    assert store.read_config()["xobs"] == [0.4, -0.3]
    assert any("xobs" in c for c in store.config_history()[-1]["changes"])


# --- two processes on one run -------------------------------------------------------------
@pytest.mark.slow
def test_a_second_process_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(
    prefect_server, tmp_path, capfd, caplog
):
    config = tmp_path / "slow.yaml"
    config.write_text(
        "simulator:\n  path: sbi_rounds.examples:slow_linear_gaussian\n"
        "  kwargs: {seconds_per_simulation: 0.1}\n"
    )
    argv = _argv(tmp_path / "runs", "--config", str(config), run_id="shared")
    holder = subprocess.Popen(
        [sys.executable, "-m", "flows.online", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    lock = tmp_path / "runs" / "shared" / "run.lock"
    run_file = tmp_path / "runs" / "shared" / "run.h5"
    try:
        deadline = time.monotonic() + 120
        # the lock is taken before the run file is created: wait for both
        while not (lock.exists() and lock.read_text() and run_file.exists()):
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        assert json.loads(lock.read_text())["pid"] == holder.pid
        before = run_file.stat().st_mtime_ns
        _fails(
            capfd,
            argv,
            f"is in use by PID {holder.pid} on host {socket.gethostname()} since",
            "rerun the same command to resume; or use another --run-id",
        )
        assert holder.poll() is None  # the holder was not disturbed
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    assert (tmp_path / "runs" / "shared" / "run.h5").stat().st_mtime_ns >= before
    assert main(argv) == 0  # the dead holder's lock is taken over
    out, err = capfd.readouterr()
    taken = f"without releasing it (PID {holder.pid} on host {socket.gethostname()} since "
    assert taken in out + err + caplog.text  # names and a time, not a raw dict
    assert RunStore.open(tmp_path / "runs" / "shared" / "run.h5").stage(1).name == "DONE"


def test_checking_the_lock_names_a_live_holder_and_takes_nothing(tmp_path):
    """``RunLock.check`` (for a check before a run starts) names the holder, writes nothing,
    and leaves a dead holder's record for the next ``acquire`` to report the takeover."""
    from sbi_rounds.lifecycle.locking import RunLock, RunLockedError

    path = tmp_path / "run.lock"
    RunLock(path).check()  # no lock file yet: nothing to say, nothing created
    assert not path.exists()
    code = (
        f"from sbi_rounds.lifecycle.locking import RunLock; import pathlib, time; "
        f"RunLock({str(path)!r}).acquire(); pathlib.Path({str(tmp_path / 'ok')!r})"
        ".write_text('1'); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "ok").exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        before = path.read_bytes()
        with pytest.raises(RunLockedError, match=f"in use by PID {holder.pid} on host"):
            RunLock(path).check()
        assert path.read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    RunLock(path).check()  # a dead holder does not block
    assert path.read_bytes() == before
    with RunLock(path) as lock:
        assert lock.previous_holder["pid"] == holder.pid


# --- bad observations, priors and simulators for a new run -------------------------------
@pytest.mark.parametrize(
    ("content", "messages"),
    [
        (None, ["returned shape (2, 2) for 2 parameter sets", "xobs has 3 values"]),
        (np.array([0.5, np.nan]), ["xobs must be finite numbers", "NaN or infinite"]),
        ("half,a,dozen\n", ["could not read numbers from"]),
        (np.array([[0.5, 0.1], [0.2, 0.3]]), ["must hold one vector (K,) or one row (1, K)"]),
    ],
    ids=["wrong-length", "nan-in-npy", "words-in-csv", "matrix-in-npy"],
)
def test_a_bad_observation_is_refused_before_anything_is_written(
    prefect_server, tmp_path, capfd, content, messages
):
    if content is None:
        xobs = ("0.5", "-0.3", "0.1")
    elif isinstance(content, str):
        (tmp_path / "xobs.csv").write_text(content)
        xobs = (str(tmp_path / "xobs.csv"),)
    else:
        np.save(tmp_path / "xobs.npy", content)
        xobs = (str(tmp_path / "xobs.npy"),)
    _fails(capfd, _argv(tmp_path / "runs", xobs=xobs), *messages)
    assert not (tmp_path / "runs" / "base" / "run.h5").exists()


@pytest.mark.parametrize(
    ("flags", "messages"),
    [
        (
            ["--low", "1", "-1", "--high", "0", "1"],
            ["prior width must be positive", "parameter(s) 0 (low=1.0, high=0.0)"],
        ),
        (["--prior", "{}:not_a_distribution"], ["must return a torch.distributions.Distribution"]),
        (["--prior", "no_such_module:prior"], ["module 'no_such_module' failed to import"]),
    ],
    ids=["box-negative-width", "not-a-distribution", "does-not-import"],
)
def test_a_bad_prior_gets_a_clear_error(prefect_server, helpers, tmp_path, capfd, flags, messages):
    flags = [f.format(helpers) for f in flags]
    _fails(capfd, _argv(tmp_path / "runs", *flags), *messages)
    run_file = tmp_path / "runs" / "base" / "run.h5"
    assert not run_file.exists() or RunStore.open(run_file).rounds() == []


def _cli(argv, tmp_path, timeout=180, pythonpath=()):
    """``python -m flows.online ARGV`` in its own session: ``(status or None if it ran past
    ``timeout`` and was killed, its output)``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*map(str, pythonpath), os.environ.get("PYTHONPATH", "")]),
    }
    with open(tmp_path / "cli.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.online", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            if proc.poll() is None or status is not None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the run's leftovers, if any
                except ProcessLookupError:
                    pass
            proc.wait()
    return status, (tmp_path / "cli.log").read_text(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize("factory", ["zero_width_prior", "negative_width_prior"])
def test_a_prior_factory_without_width_gets_a_clear_error(helpers_dir, tmp_path, factory):
    status, out = _cli(
        _argv(tmp_path / "runs", "--prior", f"bad_input_helpers:{factory}"),
        tmp_path,
        timeout=60,
        pythonpath=[helpers_dir],
    )
    assert status == 2, out[-3000:]
    assert "width" in out[out.rindex("error: ") :]


@pytest.mark.parametrize(
    ("simulator", "messages"),
    [
        (
            "no_such_module:simulate",
            [
                "module 'no_such_module' failed to import",
                "check that it is installed or on PYTHONPATH",
            ],
        ),
        ("{}:missing", ["has no attribute 'missing'"]),
        (
            "{}:three_summaries",
            [
                "the simulator failed a check on 2 prior samples",
                "returned shape (2, 3) for 2 parameter sets",
                "xobs has 2 values",
            ],
        ),
        (
            "{}:returns_none",
            [
                "the simulator failed a check on 2 prior samples",
                "returned an array of object; it must return real numbers",
            ],
        ),
        (
            "{}:returns_text",
            ["the simulator failed a check on 2 prior samples", "it must return real numbers"],
        ),
    ],
    ids=["does-not-import", "no-such-function", "wrong-shape", "returns-none", "returns-text"],
)
def test_a_bad_simulator_is_caught_before_the_run_starts(
    prefect_server, helpers, tmp_path, capfd, simulator, messages
):
    _fails(capfd, _argv(tmp_path / "runs", "--simulator", simulator.format(helpers)), *messages)
    assert not (tmp_path / "runs" / "base" / "run.h5").exists()


# --- damaged run files --------------------------------------------------------------------
def _damage(run_file, how):
    if how == "not-hdf5":
        run_file.write_bytes(b"these are not the bytes of an HDF5 file\n" * 10)
    elif how == "empty":
        run_file.write_bytes(b"")
    elif how == "truncated":
        run_file.write_bytes(run_file.read_bytes()[: run_file.stat().st_size // 2])
    elif how == "newer-format":
        with h5py.File(run_file, "r+") as f:
            f.attrs["format_version"] = FORMAT_VERSION + 1
    elif how == "other-hdf5":
        run_file.unlink()
        with h5py.File(run_file, "w") as f:
            f["data"] = np.arange(3)


@pytest.mark.parametrize(
    ("how", "messages"),
    [
        ("not-hdf5", ["is not a readable HDF5 run file", "restore the file from a backup"]),
        ("empty", ["is not a readable HDF5 run file"]),
        ("truncated", ["is not a readable HDF5 run file", "may be truncated"]),
        ("newer-format", [f"run file format v{FORMAT_VERSION + 1}", "pip install -U sbi-rounds"]),
        ("other-hdf5", ["is an HDF5 file but not an sbi-rounds run file"]),
    ],
)
def test_a_damaged_or_foreign_run_file_is_refused_and_kept_as_it_is(run_copy, capfd, how, messages):
    _damage(run_copy / "run.h5", how)
    before = _snapshot(run_copy)
    _fails(capfd, _argv(run_copy.parent), *messages, "Nothing was changed")
    assert _snapshot(run_copy) == before


@pytest.mark.slow
def test_errors_found_in_the_run_file_print_no_traceback(run_copy, tmp_path):
    _damage(run_copy / "run.h5", "truncated")
    status, out = _cli(_argv(run_copy.parent), tmp_path)
    assert status == 2 and "is not a readable HDF5 run file" in out
    assert "Traceback" not in out, out


# --- no code from the file ------------------------------------------------------------------
def test_a_finished_run_file_holds_only_numbers_and_text(finished_run):
    """Every dataset and attribute of a real run file is numeric or a string: no pickled
    objects, opaque blobs, references or compound types that would need custom classes."""
    found = []

    def check(where, dtype):
        if h5py.check_string_dtype(dtype) is not None:
            return
        if dtype.kind not in "biuf" or dtype.names is not None:
            found.append((where, str(dtype)))

    def visit(name, obj):
        for key in obj.attrs:
            check(f"{name}@{key}", obj.attrs.get_id(key).dtype)
        if isinstance(obj, h5py.Dataset):
            check(name, obj.dtype)
            value = obj[()]
            assert isinstance(value, (np.ndarray, np.generic, bytes, str)), name

    with h5py.File(finished_run / "run.h5", "r") as f:
        for key in f.attrs:
            check(f"/@{key}", f.attrs.get_id(key).dtype)
        f.visititems(visit)
        assert len(f["rounds/0001/network"]) > 0  # the weights are in there, as datasets
    assert found == []


def test_loading_a_run_unpickles_nothing(finished_run):
    """Opening the run file, reading every part and rebuilding the posterior trigger no
    ``pickle.*`` audit event (every unpickling of an object raises ``pickle.find_class``)."""
    code = textwrap.dedent(f"""
        import sys
        from sbi_rounds.report.results import load_posterior
        from sbi_rounds.store import RunStore

        def load():
            store = RunStore.open({str(finished_run / "run.h5")!r})
            store.read_config(); store.read_simulations(1); store.read_network(1)
            store.read_history(1); store.read_samples(1); store.checkpoint_sink(1).load()
            posterior = load_posterior({str(finished_run / "run.h5")!r}, round=1)
            posterior.sample((5,), show_progress_bars=False)

        load()  # first: every module is imported (dask pickles operators at import)
        events = []
        sys.addaudithook(lambda event, args: event.startswith("pickle.")
                         and events.append((event, repr(args)[:80])))
        load()
        print("EVENTS", events)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    ).stdout
    assert "EVENTS []" in out, out
