"""What a run detects and how it recovers, through the command line: changed code, invalid rounds.

Real runs (``flows.cli.run.main`` in process, real Dask workers, the session's Prefect
server) of user code in a module the test rewrites between runs.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys

import h5py
import pytest
from small_run import SMALL as SMALL_RUN

from flows.cli.run import main
from sbi_rounds.store import RoundCounts, RunStore

SMALL = [
    *SMALL_RUN,
    *("--predictive-simulations", "0", "--map-iterations", "0", "--calibration-simulations", "0"),
]

SIMULATOR = '''
"""A user's simulator and prior, rewritten by the tests."""
import torch
from sbi.utils import BoxUniform


def simulate(theta):
    x = theta + 0.1 * torch.randn_like(theta)
    {change}
    return x


def prior():
    return BoxUniform(torch.tensor([-2.0, -2.0]), torch.tensor([{high}, 2.0]))
'''


@pytest.fixture(scope="module", autouse=True)
def _prefect_logging(prefect_server):
    """Prefect's console handler bound to the session's stderr, not to one test's capfd
    (whose file is closed after that test)."""
    from prefect.logging.configuration import setup_logging

    setup_logging()


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """``write(change=..., high=...)`` (re)writes the module ``user_sim`` in a directory on the
    path of this process and of the Dask workers; returns its name."""
    directory = tmp_path / "code"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(directory), os.environ["PYTHONPATH"]]))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)

    def write(change: str = "", high: str = "2.0") -> str:
        (directory / "user_sim.py").write_text(SIMULATOR.format(change=change, high=high))
        sys.modules.pop("user_sim", None)
        importlib.invalidate_caches()
        return "user_sim"

    yield write
    sys.modules.pop("user_sim", None)


def _argv(run_dir, *extra):
    return [
        "--xobs",
        "0.5",
        "-0.3",
        *SMALL,
        "--run-dir",
        str(run_dir),
        "--run-id",
        "r",
        "--simulator",
        "user_sim:simulate",
        *extra,
    ]


def _snapshot(directory):
    return {
        p.relative_to(directory).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _error(capfd, argv, status):
    code = main(argv)
    out, err = capfd.readouterr()
    assert code == status, out + err
    assert not _tracebacks(err) and err.count("error: ") == 1, err
    return err[err.rindex("error: ") :]


def _tracebacks(err):
    """The tracebacks in ``err``, but those of multiprocessing's resource tracker in Dask's
    worker processes (their noise, not the run's)."""
    blocks = err.split("Traceback (most recent call last):")[1:]
    return [b for b in blocks if "resource_tracker" not in b.split("\n\n")[0][:400]]


# --- changed code under the same name -----------------------------------------------------
@pytest.mark.parametrize("part", ["simulator", pytest.param("prior", marks=pytest.mark.slow)])
def test_changed_code_is_refused_leaving_the_file_unchanged_and_can_be_accepted(
    prefect_server, user_code, tmp_path, capfd, part
):
    user_code()
    runs = tmp_path / "runs"
    argv = _argv(runs, *(["--prior", "user_sim:prior"] if part == "prior" else []))
    assert main(argv) == 0
    capfd.readouterr()
    if part == "simulator":
        user_code(change="x = x + 5.0  # shifted")
    else:
        user_code(high="2.5")
    before = _snapshot(runs / "r")
    error = _error(capfd, [*argv, "--rounds", "2"], status=2)
    assert "the code of the simulator or prior changed" in error
    assert f"{part}.function: sha256:" in error and f"{part}.module: sha256:" in error
    assert "--run-id NEW_ID" in error and "--accept-changed-code" in error
    assert "Nothing in the run file was changed" in error
    assert _snapshot(runs / "r") == before  # bytes and modification times
    assert main([*argv, "--rounds", "2", "--accept-changed-code"]) == 0
    store = RunStore.open(runs / "r" / "run.h5")
    assert store.stage(2).name == "DONE"
    changes = store.config_history()[-2]["changes"]  # then "rounds" changed
    assert any(c.startswith(f"code: {part}.function") for c in changes), changes
    assert main([*argv, "--rounds", "2"]) == 0  # the accepted code is the recorded one now


@pytest.mark.slow
def test_a_run_from_before_code_fingerprints_resumes_and_records_one(
    prefect_server, user_code, tmp_path
):
    user_code()
    runs = tmp_path / "runs"
    assert main(_argv(runs)) == 0
    with h5py.File(runs / "r" / "run.h5", "r+") as f:
        del f.attrs["code_fingerprint"]  # as a run file written before this change
        del f.attrs["crc32_settings"]  # (and before the settings' checksum)
    assert RunStore.open(runs / "r" / "run.h5").code_fingerprint() is None
    user_code(change="x = x * 1.0")  # unknown to the old file: nothing to compare with
    assert main([*_argv(runs), "--rounds", "2"]) == 0
    code = RunStore.open(runs / "r" / "run.h5").code_fingerprint()
    assert set(code["simulator"]) >= {"function", "module"}


# --- a round without enough valid simulations ---------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("fix", ["accept-changed-code", "resimulate-invalid"])
def test_an_all_invalid_round_recovers_after_the_simulator_is_fixed(
    prefect_server, user_code, tmp_path, capfd, fix
):
    marker = tmp_path / "fixed"
    if fix == "accept-changed-code":
        user_code(change="x = x * float('nan')")
    else:  # the same code, broken by its environment (a missing input file, say)
        user_code(
            change=f"x = x if __import__('os').path.exists({str(marker)!r}) else x * float('nan')"
        )
    runs = tmp_path / "runs"
    error = _error(capfd, _argv(runs), status=1)
    assert "only 0 of 100 simulations are valid (finite); at least 50 are needed" in error
    assert error.endswith(" --resimulate-invalid\n") and "resume with:" in error
    # a lower threshold does not help a round without a valid row, and does not crash
    error = _error(capfd, [*_argv(runs), "--min-valid-fraction", "0"], status=1)
    assert "only 0 of 100 simulations are valid (finite); at least 2 are needed" in error
    if fix == "accept-changed-code":
        user_code()
        assert "--accept-changed-code" in _error(capfd, _argv(runs), status=2)
    else:
        marker.write_text("")
        # without the flag the committed invalid rows stay what they are
        assert "at least 50 are needed" in _error(capfd, _argv(runs), status=1)
    assert main([*_argv(runs), f"--{fix}"]) == 0
    store = RunStore.open(runs / "r" / "run.h5")
    assert store.counts(1) == RoundCounts(simulations=100, valid=100, invalid=0)
    assert store.stage(1).name == "DONE"


def test_the_invalid_rows_of_a_round_are_reopened_only_before_training(tmp_path):
    from sbi_rounds.store import Stage

    store = RunStore.create(tmp_path / "run.h5", config={}, fingerprint="f")
    store.plan_round(
        1,
        num_simulations=10,
        theta_dim=1,
        x_dim=1,
        chunk_size=4,
        num_posterior_samples=2,
        proposal={},
    )
    store.write_theta(1, 0, [[float(i)] for i in range(10)])
    x = [[1.0]] * 4
    store.write_chunks(
        1,
        [
            (0, x, 1.0),
            (1, [[1.0], [float("nan")], [1.0], [1.0]], 1.0),
            (2, [[float("inf")], [1.0]], 1.0),
        ],
    )
    store.set_stage(1, Stage.SIMULATED)
    assert store.reopen_invalid_chunks(1) == 2
    assert store.pending_chunks(1) == [1, 2] and store.stage(1) == Stage.SAMPLED
    assert store.reopen_invalid_chunks(1) == 0  # nothing committed invalid any more


# --- damaged bytes inside a run file ------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(prefect_server, tmp_path_factory):
    """A small finished run of the default simulator, made through the command line."""
    runs = tmp_path_factory.mktemp("finished")
    argv = [a for a in _argv(runs) if a not in ("--simulator", "user_sim:simulate")]
    assert main(argv) == 0
    return runs / "r", argv


def _overwrite(run_file, dataset, data=None):
    """Overwrite the stored bytes of ``dataset`` (or, for a group, its object header) in
    place, in the file that holds it (the run file or a round's bulk file), as a disk or a
    copy gone wrong would."""
    with h5py.File(run_file, "r") as f:
        obj = f[dataset]
        if isinstance(obj, h5py.Dataset):
            offset, size = obj.id.get_offset(), obj.id.get_storage_size()
        else:
            offset, size = h5py.h5o.get_info(obj.id).addr, 64
        holder = obj.file.filename
    with open(holder, "r+b") as f:
        f.seek(offset)
        f.write(data or bytes((i * 37 + 11) % 256 for i in range(size)))


@pytest.mark.parametrize(
    ("dataset", "named"),
    [
        ("rounds/0001/network", "round 1's network weights are damaged"),
        ("rounds/0001/x", "round 1's simulations are damaged"),
        ("rounds/0001/posterior_samples", "round 1's posterior samples are damaged"),
        ("rounds/0001/network/GROUP", "round 1's network"),
    ],
    ids=["weights", "simulations", "posterior-samples", "internals"],
)
def test_damaged_bytes_are_named_by_verify_resume_report_and_load(
    finished_run, tmp_path, capfd, dataset, named
):
    from flows.cli.main import main as sbi_rounds
    from sbi_rounds.report.results import load_posterior
    from sbi_rounds.store import DamagedRunError

    run_dir, argv = finished_run
    assert sbi_rounds(["verify", str(run_dir)]) == 0
    assert "intact" in capfd.readouterr().out
    copy = tmp_path / "runs" / "r"
    shutil.copytree(run_dir, copy)
    run_file = copy / "run.h5"
    if dataset == "rounds/0001/network":  # the largest weight matrix
        with h5py.File(run_file, "r") as f:
            net = f[dataset]
            dataset = max((f"{dataset}/{k}" for k in net), key=lambda k: f[k].size)
    _overwrite(run_file, dataset.removesuffix("/GROUP"))
    before = _snapshot(copy)
    assert sbi_rounds(["verify", str(copy)]) == 1
    err = capfd.readouterr().err
    assert named in err and f"sbi-rounds verify {copy} --repair" in err, err
    assert "restore the file from a backup" in err, err
    argv = [str(tmp_path / "runs") if a == str(run_dir.parent) else a for a in argv]
    error = _error(capfd, [*argv, "--rounds", "2"], status=2)  # resuming is refused
    assert named in error and "Nothing was changed" in error
    assert sbi_rounds(["report", str(copy)]) == 2
    assert named in capfd.readouterr().err
    assert _snapshot(copy) == before
    if "network" in dataset or dataset.endswith("/x"):  # what the network is built from
        with pytest.raises(DamagedRunError, match=named):
            load_posterior(run_file)
    else:
        load_posterior(run_file)  # the network and round 1's simulations are intact


def test_damage_the_start_up_check_cannot_see_is_found_before_it_is_used(
    finished_run, tmp_path, capfd
):
    """Bytes of round 1's simulations changed with the file's size and time kept (a disk's
    rot): the start-up check does not read sealed files again, so the run goes on; training
    reads them, and stops with one line naming the damage before anything is built from it,
    keeping round 2's simulations."""
    from sbi_rounds.store import Stage

    run_dir, argv = finished_run
    copy = tmp_path / "runs" / "r"
    shutil.copytree(run_dir, copy)
    x_file = copy / "rounds" / "run.round-0001.x.h5"
    sealed = x_file.stat()
    _overwrite(copy / "run.h5", "rounds/0001/x")
    os.utime(x_file, ns=(sealed.st_atime_ns, sealed.st_mtime_ns))
    argv = [str(tmp_path / "runs") if a == str(run_dir.parent) else a for a in argv]
    error = _error(capfd, [*argv, "--rounds", "2"], status=2)
    assert "round 1's simulations are damaged" in error, error
    assert f"sbi-rounds verify {copy} --repair" in error, error
    assert "what the run committed before is kept" in error and "Nothing was" not in error
    store = RunStore.open(copy / "run.h5")
    assert store.stage(2) == Stage.APPENDED and store.pending_chunks(2) == []
    assert not store.has_network(2)


@pytest.fixture(scope="module")
def three_rounds(prefect_server, tmp_path_factory):
    """A small finished run of three rounds, made through the command line (not changed by
    the tests: they damage copies)."""
    runs = tmp_path_factory.mktemp("three")
    argv = [a for a in _argv(runs) if a not in ("--simulator", "user_sim:simulate")]
    argv[argv.index("--rounds") + 1] = "3"
    assert main(argv) == 0
    return runs / "r", argv


def test_repair_leaves_an_intact_file_untouched(three_rounds, capfd):
    from flows.cli.main import main as sbi_rounds

    run_dir, _ = three_rounds
    before = _snapshot(run_dir)
    assert sbi_rounds(["verify", str(run_dir), "--repair"]) == 0
    assert "intact" in capfd.readouterr().out
    assert _snapshot(run_dir) == before  # bytes and modification times


def test_a_finished_run_leaves_its_sealed_round_files_as_sealed(three_rounds):
    """Nothing the run does after sealing a round's files changes them (not even their
    modification time), so the start-up check of a resumed run does not read them again."""
    from sbi_rounds.store.checksums import stored_checksum, unchanged_since_sealed

    run_dir, _ = three_rounds
    with h5py.File(run_dir / "run.h5", "r") as f:
        rounds = f["rounds"]
        for r in rounds:
            g = rounds[r]
            linked = [n for n in g if isinstance(g.get(n, getlink=True), h5py.ExternalLink)]
            assert {"x", "theta", "valid", "posterior_samples"} <= set(linked), r
            sealed = [n for n in linked if stored_checksum(g, n) is not None]
            assert sealed and all(unchanged_since_sealed(g, n) for n in sealed), r


@pytest.mark.parametrize(
    ("dataset", "named", "back_to"),
    [
        ("rounds/0002/network", "round 2's network weights", "APPENDED"),
        ("rounds/0002/posterior_samples", "round 2's posterior samples", "TRAINED"),
        ("rounds/0002/x", "round 2's simulations", "SAMPLED"),
        ("rounds/0002/theta", "round 2's parameters", "PLANNED"),
    ],
    ids=["weights", "posterior-samples", "simulations", "parameters"],
)
def test_damage_is_repaired_and_recomputed_bit_for_bit(
    three_rounds, tmp_path, capfd, dataset, named, back_to
):
    """Damaged, ``verify --repair``, the same command again: the run finishes, equal bit for
    bit to the undamaged one (recomputed from the round's simulations, or simulated again
    from the same seeds)."""
    from flows.cli.main import main as sbi_rounds
    from sbi_rounds.store import Stage

    run_dir, argv = three_rounds
    copy = tmp_path / "runs" / "r"
    shutil.copytree(run_dir, copy)
    run_file = copy / "run.h5"
    if dataset.endswith("network"):  # the largest weight matrix
        with h5py.File(run_file, "r") as f:
            net = f[dataset]
            dataset = max((f"{dataset}/{k}" for k in net), key=lambda k: f[k].size)
    _overwrite(run_file, dataset)
    assert sbi_rounds(["verify", str(copy)]) == 1
    err = capfd.readouterr().err
    assert f"{named} are damaged" in err, err
    assert f"sbi-rounds verify {copy} --repair" in err, err
    assert sbi_rounds(["verify", str(copy), "--repair"]) == 0
    out = capfd.readouterr().out
    assert f"{named} left out; the next run recomputes its " in out, out
    assert list(copy.glob("run.h5.tmp-*")) == []
    store = RunStore.open(run_file)
    assert [store.stage(r).name for r in (1, 2, 3)] == ["DONE", back_to, "DONE"]
    assert "repair: round 2: " in store.config_history()[-1]["changes"][0]
    argv = [str(tmp_path / "runs") if a == str(run_dir.parent) else a for a in argv]
    assert main(argv) == 0
    assert sbi_rounds(["verify", str(copy)]) == 0
    reference = RunStore.open(run_dir / "run.h5")
    for r in (1, 2, 3):
        assert store.stage(r) == Stage.DONE
        assert store.read_samples(r).tobytes() == reference.read_samples(r).tobytes(), r
        for new, old in zip(store.read_simulations(r), reference.read_simulations(r), strict=True):
            assert new.tobytes() == old.tobytes(), r
        weights, ref_weights = store.read_network(r)[0], reference.read_network(r)[0]
        assert weights.keys() == ref_weights.keys()
        for key, value in weights.items():
            assert value.numpy().tobytes() == ref_weights[key].numpy().tobytes(), (r, key)
    assert store.counts(2) == reference.counts(2)


def test_simulations_that_do_not_repeat_after_a_repair_are_refused(
    prefect_server, user_code, tmp_path, capfd
):
    """A simulator that ignores its seed (an offset from os.urandom): round 1's simulations,
    damaged and simulated again after a repair, differ from those the network was trained
    on, and the run stops with one line instead of mixing them."""
    from flows.cli.main import main as sbi_rounds
    from sbi_rounds.store import Stage

    user_code(change="x = x + float(__import__('os').urandom(1)[0]) * 1e-3")
    runs = tmp_path / "runs"
    assert main(_argv(runs)) == 0
    _overwrite(runs / "r" / "run.h5", "rounds/0001/x")
    assert sbi_rounds(["verify", str(runs / "r"), "--repair"]) == 0
    capfd.readouterr()
    error = _error(capfd, _argv(runs), status=2)
    assert "round 1's simulations, computed again after a repair of the run file, differ" in error
    assert "Start a new run" in error
    store = RunStore.open(runs / "r" / "run.h5")
    assert store.stage(1) == Stage.SIMULATED and store.has_network(1)
    assert store.verify() == []


@pytest.mark.slow
def test_a_finished_run_rerun_with_other_simulations_per_round_says_they_are_kept(
    finished_run, tmp_path, capfd, caplog
):
    run_dir, argv = finished_run
    copy = tmp_path / "runs" / "r"
    shutil.copytree(run_dir, copy)
    argv = [str(tmp_path / "runs") if a == str(run_dir.parent) else a for a in argv]
    argv[argv.index("--simulations-per-round") + 1] = "200"
    assert main(argv) == 0
    _, err = capfd.readouterr()
    assert (
        "simulations_per_round changed, but rounds 1 are planned already and keep the "
        "simulations they have (100)"
    ) in caplog.text + err


@pytest.mark.slow
def test_a_training_loss_that_becomes_nan_is_one_error_line_with_the_resume_command(
    prefect_server, user_code, tmp_path, capfd
):
    """The issue's case: a prior narrowed (0.3 for 2) under the same name, the change
    accepted; round 1's simulations lie outside it and round 2's training loss is NaN."""
    user_code()
    argv = _argv(tmp_path / "runs", "--prior", "user_sim:prior")
    assert main(argv) == 0
    capfd.readouterr()
    user_code(high="0.3")
    error = _error(capfd, [*argv, "--rounds", "2", "--accept-changed-code"], status=1)
    assert "training loss became nan" in error and "resume with:" in error


# --- round files truncated or lost --------------------------------------------------------
@pytest.mark.parametrize("how", ["truncated", "missing"])
def test_a_truncated_or_lost_round_file_is_rebuilt_bit_for_bit(three_rounds, tmp_path, capfd, how):
    """``truncate -s`` of round 2's data file, or its simulations file deleted: export and
    status name the round and read the others, ``verify --repair`` and the run's command
    again rebuild it from the seed, equal bit for bit to the undamaged run."""
    from flows.cli.main import main as sbi_rounds
    from sbi_rounds.store import Stage

    run_dir, argv = three_rounds
    copy = tmp_path / "runs" / "r"
    shutil.copytree(run_dir, copy)
    if how == "truncated":
        name = "rounds/run.round-0002.h5"
        os.truncate(copy / name, (copy / name).stat().st_size // 2)
    else:
        name = "rounds/run.round-0002.x.h5"
        (copy / name).unlink()
    problem = "cannot be read" if how == "truncated" else "is missing"
    assert sbi_rounds(["export", str(copy), "-o", str(tmp_path / "e.npz")]) == 1
    out, err = capfd.readouterr()
    assert not _tracebacks(err) and f"round 2: its file {name} {problem}" in err, err
    assert "round_001_x" in out and "round_003_x" in out and "round_002" not in out
    assert sbi_rounds(["status", str(copy)]) == 0
    assert f"round 2 is damaged: its file {name} {problem}" in capfd.readouterr().out
    assert sbi_rounds(["verify", str(copy), "--repair"]) == 0
    assert "left out; the next run recomputes its " in capfd.readouterr().out
    argv = [str(tmp_path / "runs") if a == str(run_dir.parent) else a for a in argv]
    assert main(argv) == 0
    assert sbi_rounds(["verify", str(copy)]) == 0
    store, reference = RunStore.open(copy / "run.h5"), RunStore.open(run_dir / "run.h5")
    for r in (1, 2, 3):
        assert store.stage(r) == Stage.DONE
        assert store.read_samples(r).tobytes() == reference.read_samples(r).tobytes(), r
        for new, old in zip(store.read_simulations(r), reference.read_simulations(r), strict=True):
            assert new.tobytes() == old.tobytes(), r


def test_load_posterior_names_a_lost_simulations_file(three_rounds, tmp_path, capfd):
    """Round 1's simulations file deleted: ``DamagedRunError`` naming it (not NaN rows that
    sbi refuses); after ``verify --repair``, one line saying to rerun the run's command
    (round 3's network is rebuilt from round 1's simulations before its weights load)."""
    from flows.cli.main import main as sbi_rounds
    from sbi_rounds.report.results import load_posterior
    from sbi_rounds.store import DamagedRunError, RunFileError

    run_dir, _ = three_rounds
    copy = tmp_path / "r"
    shutil.copytree(run_dir, copy)
    (copy / "rounds" / "run.round-0001.x.h5").unlink()
    with pytest.raises(DamagedRunError, match="its file rounds/run.round-0001.x.h5 is missing"):
        load_posterior(copy)
    assert sbi_rounds(["verify", str(copy), "--repair"]) == 0
    with pytest.raises(RunFileError, match="rerun the run's command to recompute them"):
        load_posterior(copy)


# --- code named in a run file -------------------------------------------------------------
HOSTILE = """
open({marker!r}, "a").write("imported\\n")


def prior():
    open({marker!r}, "a").write("called\\n")
    raise SystemExit("a prior named by an edited run file was called")
"""


def test_settings_edited_to_name_code_never_run_it(finished_run, tmp_path, capfd, monkeypatch):
    """The stored prior edited to ``{path: hostile:prior}`` (a module that records being
    imported): verify names the edit; load_posterior, report, status and export refuse it
    or read stored data only; with the settings' checksum forged too, still nothing is
    imported, with or without ``import_code``."""
    from flows.cli.main import main as sbi_rounds
    from sbi_rounds.errors import CodeChangedError
    from sbi_rounds.report.results import load_posterior
    from sbi_rounds.store import DamagedRunError
    from sbi_rounds.store.checksums import stamp_settings

    marker = tmp_path / "ran"
    code = tmp_path / "code"
    code.mkdir()
    (code / "hostile.py").write_text(HOSTILE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    run_dir, _ = finished_run
    copy = tmp_path / "r"
    shutil.copytree(run_dir, copy)
    with h5py.File(copy / "run.h5", "r+") as f:
        config = json.loads(f.attrs["config"])
        config["prior"] = {"path": "hostile:prior", "low": None, "high": None}
        f.attrs["config"] = json.dumps(config, sort_keys=True)
    assert sbi_rounds(["verify", str(copy)]) == 1
    assert "the run's stored settings are damaged" in capfd.readouterr().err
    with pytest.raises(DamagedRunError, match="stored settings"):
        load_posterior(copy)
    with pytest.raises(DamagedRunError, match="stored settings"):
        load_posterior(copy, import_code=True)
    for command in (["report", str(copy)], ["status", str(copy)], ["export", str(copy)]):
        assert sbi_rounds(command) == 2, command
        assert "stored settings are damaged" in "".join(capfd.readouterr()), command
    with h5py.File(copy / "run.h5", "r+") as f:  # the checksum forged to match
        stamp_settings(f)
    with pytest.raises(ValueError, match="pass import_code=True"):
        load_posterior(copy)
    with pytest.raises(CodeChangedError, match="the run recorded no prior factory"):
        load_posterior(copy, import_code=True)
    assert sbi_rounds(["report", str(copy), "-o", str(tmp_path / "report.html")]) == 0
    assert sbi_rounds(["export", str(copy), "-o", str(tmp_path / "e.npz")]) == 0
    assert sbi_rounds(["status", str(copy)]) == 0
    assert not marker.exists() and "hostile" not in sys.modules


def test_a_prior_factory_is_called_only_when_asked_and_after_its_code_is_checked(
    prefect_server, user_code, tmp_path, capfd
):
    from flows.cli.main import main as sbi_rounds
    from sbi_rounds.errors import CodeChangedError
    from sbi_rounds.report.results import load_posterior

    user_code()
    runs = tmp_path / "runs"
    assert main(_argv(runs, "--prior", "user_sim:prior")) == 0
    sys.modules.pop("user_sim", None)
    with pytest.raises(ValueError, match=r"prior is code \(user_sim:prior\).*import_code=True"):
        load_posterior(runs / "r")
    assert sbi_rounds(["report", str(runs / "r")]) == 0  # the prior's spread: stored draws
    assert "user_sim" not in sys.modules  # nothing imported
    posterior = load_posterior(runs / "r", import_code=True)
    assert posterior.sample((5,)).shape == (5, 2)
    user_code(high="2.5")  # the module's file changed
    with pytest.raises(CodeChangedError, match="prior.module: sha256:.*nothing was imported"):
        load_posterior(runs / "r", import_code=True)
    assert "user_sim" not in sys.modules
    capfd.readouterr()


@pytest.mark.slow
def test_a_repair_that_needs_a_changed_simulator_is_refused(
    prefect_server, user_code, tmp_path, capfd
):
    """Round 1's data file truncated, and the simulator changed since: its simulations
    cannot be reproduced, so ``verify --repair`` refuses, changing nothing; with the
    simulator as it was, it repairs and the run's command rebuilds the round."""
    from flows.cli.main import main as sbi_rounds

    user_code()
    runs = tmp_path / "runs"
    assert main(_argv(runs)) == 0
    data = runs / "r" / "rounds" / "run.round-0001.h5"
    os.truncate(data, data.stat().st_size // 2)
    user_code(change="x = x + 5.0  # shifted")
    capfd.readouterr()
    before = _snapshot(runs / "r")
    assert sbi_rounds(["verify", str(runs / "r"), "--repair"]) == 1
    err = capfd.readouterr().err
    assert not _tracebacks(err) and err.count("error: ") == 1, err
    assert "needs round(s) 1's simulations simulated again, but the simulator changed" in err
    assert "simulator.module: sha256:" in err and "Nothing was changed" in err
    after = _snapshot(runs / "r")
    assert after.pop("run.lock") and before.pop("run.lock")  # taken for the repair
    assert after == before
    user_code()
    assert sbi_rounds(["verify", str(runs / "r"), "--repair"]) == 0
    assert main(_argv(runs)) == 0
    assert sbi_rounds(["verify", str(runs / "r")]) == 0
