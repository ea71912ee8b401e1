"""The fault catalogue: every fault a user can meet, as one table of command, exit status and
message, each checked for "no traceback" and "nothing lost", on real files.

Each case starts from a copy of one small finished 2-round run made through the command line
(or from an empty directory), does the damage or sets up the bad input, and runs one
``sbi-rounds`` command in this process (the session's Prefect server serves ``run``). Then:

* the exit status is the expected one, and a failure is one ``error:`` line holding the
  expected fragment, with no traceback on the console;
* nothing is lost: the run directory's files are byte for byte what they were before the
  command (the damage included: no command but ``verify --repair`` changes a damaged run).

The cases that need a process of their own (SIGKILL at every stage, SIGINT/SIGTERM, a disk
that fills up mid-run, hanging workers) are in ``test_crash_safety``, ``test_failures`` and
``test_quiet_console``; read-only runs in depth in ``test_read_only``; repairs and reruns in
``test_recovery`` and ``test_store_damaged_files``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import pytest
from small_run import SMALL as SMALL_RUN

from flows.cli.main import main as sbi_rounds

SMALL = [
    *SMALL_RUN,
    "--rounds",
    "2",
    "--calibration-simulations",
    "0",
    "--predictive-simulations",
    "0",
    "--map-iterations",
    "0",
]
XOBS = ["--xobs", "0.5", "-0.3"]

#: A module that records being imported: the hostile settings name it.
HOSTILE = """
from pathlib import Path

Path(__file__).with_suffix(".imported").write_text("imported")


def prior():
    raise RuntimeError("this code must never run")
"""


def _run_argv(runs: Path, *extra: str) -> list[str]:
    return ["run", *XOBS, *SMALL, "--run-dir", str(runs), "--run-id", "r", *extra]


@pytest.fixture(scope="module")
def finished(prefect_server, tmp_path_factory) -> Path:
    """The ``runs`` directory of a small finished 2-round run ``r``."""
    runs = tmp_path_factory.mktemp("catalogue") / "runs"
    assert sbi_rounds(_run_argv(runs)) == 0
    return runs


@dataclass(frozen=True)
class Case:
    """One fault: ``setup(runs, tmp)`` damages a copy of the finished run (``runs``) or
    writes bad input under ``tmp`` and returns the command's arguments."""

    setup: Callable[[Path, Path], list[str]]
    status: int
    fragment: str


def _truncate(name: str) -> Callable[[Path], None]:
    """Cut the file to half its size (as ``truncate -s`` does: a copy cut short)."""

    def damage(runs: Path) -> None:
        path = runs / "r" / name
        os.truncate(path, path.stat().st_size // 2)

    return damage


def _remove(name: str) -> Callable[[Path], None]:
    def damage(runs: Path) -> None:
        (runs / "r" / name).unlink()

    return damage


def _flip(dataset: str | None, name: str = "rounds/run.round-0002.h5") -> Callable[[Path], None]:
    """Overwrite a few bytes in the middle of ``dataset``'s stored data (a bad sector);
    None: the largest of round 2's network weights in run.h5."""

    def damage(runs: Path) -> None:
        path = runs / "r" / name
        with h5py.File(path, "r") as f:
            if dataset is None:
                weights = f["rounds/0002/network"]
                key = max(weights, key=lambda k: weights[k].size)
                target = f"rounds/0002/network/{key}"
            else:
                target = dataset
            offset = f[target].id.get_offset()
            size = f[target].id.get_storage_size()
        assert offset is not None and size > 8, (target, offset, size)
        with open(path, "r+b") as f:
            f.seek(offset + size // 2)
            f.write(b"\xff\x00\xfe\x01\xfd\x02\xfc\x03")

    return damage


def _edit_settings(change: Callable[[dict], None]) -> Callable[[Path], None]:
    """Edit the settings stored in run.h5 as an outside program would."""
    import json

    def damage(runs: Path) -> None:
        with h5py.File(runs / "r" / "run.h5", "r+") as f:
            settings = json.loads(f.attrs["config"])
            change(settings)
            f.attrs["config"] = json.dumps(settings)

    return damage


def _on_run(damage: Callable[[Path], None], *argv: str) -> Callable[[Path, Path], list[str]]:
    def setup(runs: Path, tmp: Path) -> list[str]:
        damage(runs)
        return [a.replace("{run}", str(runs / "r")).replace("{tmp}", str(tmp)) for a in argv]

    return setup


def _resume(damage: Callable[[Path], None]) -> Callable[[Path, Path], list[str]]:
    """The run's own command again, after ``damage``."""

    def setup(runs: Path, tmp: Path) -> list[str]:
        damage(runs)
        return _run_argv(runs)

    return setup


def _input(make: Callable[[Path], list[str]]) -> Callable[[Path, Path], list[str]]:
    def setup(runs: Path, tmp: Path) -> list[str]:
        return make(tmp)

    return setup


def _nothing(runs: Path) -> None:
    pass


def _config_file(tmp: Path) -> list[str]:
    (tmp / "run.yaml").write_text("xobs: [0.5, -0.3]\nroundz: 3\n")
    return _run_argv(tmp / "fresh", "--config", str(tmp / "run.yaml"))


def _empty_csv(tmp: Path) -> list[str]:
    (tmp / "xobs.csv").write_text("")
    argv = _run_argv(tmp / "fresh")
    argv[argv.index("0.5") : argv.index("0.5") + 2] = [str(tmp / "xobs.csv")]
    return argv


def _too_big(tmp: Path) -> list[str]:
    argv = _run_argv(tmp / "fresh")
    argv[argv.index("--simulations-per-round") + 1] = str(10**13)
    return argv


def _hostile(settings: dict) -> None:
    settings["prior"] = {"path": "catalogue_hostile:prior"}


def _more_rounds(settings: dict) -> None:
    settings["rounds"] = 7


CASES: dict[str, Case] = {
    # bad flags and settings: refused before anything is written
    "unknown flag": Case(
        _input(lambda t: _run_argv(t / "fresh", "--no-such-flag")), 2, "--no-such-flag"
    ),
    "wrong value": Case(_input(lambda t: _run_argv(t / "fresh", "--rounds", "0")), 2, "rounds"),
    "unknown setting in a config file": Case(_input(_config_file), 2, "roundz"),
    "scheduler address without a port": Case(
        _input(lambda t: _run_argv(t / "fresh", "--dask-address", "foo")), 2, "cluster.address"
    ),
    "empty observation file": Case(_input(_empty_csv), 2, "xobs.csv"),
    "disk too small for the run": Case(_input(_too_big), 2, "not enough free disk"),
    "simulator that is not there": Case(
        _input(lambda t: _run_argv(t / "fresh", "--simulator", "no_such_module:f")),
        2,
        "no_such_module",
    ),
    "simulator returning text": Case(
        _input(lambda t: _run_argv(t / "fresh", "--simulator", "simulators:returns_strings")),
        2,
        "simulator",
    ),
    "simulator that hangs": Case(
        _input(
            lambda t: _run_argv(
                t / "fresh", "--simulator", "simulators:sleepy", "--cluster.check-timeout", "0.01"
            )
        ),
        2,
        "0.01",
    ),
    "simulator failing on every chunk": Case(
        _input(
            lambda t: _run_argv(
                t / "fresh", "--simulator", "simulators:fails_on_chunks", "--retries", "0"
            )
        ),
        1,
        "the model diverged at step 7",
    ),
    # a finished run resumed with other settings
    "resume with other settings": Case(
        lambda runs, tmp: _run_argv(runs, "--seed", "5"), 2, "--allow-change"
    ),
    # damage: named, never "repaired" silently; only verify --repair writes
    "truncated round file, verify": Case(
        _on_run(_truncate("rounds/run.round-0002.h5"), "verify", "{run}"),
        1,
        "rounds/run.round-0002.h5",
    ),
    "truncated round file, export": Case(
        _on_run(_truncate("rounds/run.round-0002.h5"), "export", "{run}", "-o", "{tmp}/out.npz"),
        1,
        "rounds/run.round-0002.h5",
    ),
    "missing round file, status": Case(
        _on_run(_remove("rounds/run.round-0002.h5"), "status", "{run}"), 0, ""
    ),
    "missing simulations file, verify": Case(
        _on_run(_remove("rounds/run.round-0001.x.h5"), "verify", "{run}"),
        1,
        "rounds/run.round-0001.x.h5",
    ),
    "damaged parameters, verify": Case(_on_run(_flip("theta"), "verify", "{run}"), 1, "round 2"),
    "damaged simulations, verify": Case(
        _on_run(_flip("x", "rounds/run.round-0002.x.h5"), "verify", "{run}"), 1, "round 2"
    ),
    "damaged posterior samples, verify": Case(
        _on_run(_flip("posterior_samples"), "verify", "{run}"), 1, "round 2"
    ),
    "damaged network weights, verify": Case(
        _on_run(_flip(None, "run.h5"), "verify", "{run}"), 1, "round 2"
    ),
    "truncated round file, resume": Case(
        _resume(_truncate("rounds/run.round-0002.h5")), 2, "repair"
    ),
    # hostile settings: an edit is named, and the code it names never runs
    "settings edited to name code, verify": Case(
        _on_run(_edit_settings(_hostile), "verify", "{run}"), 1, "settings"
    ),
    "settings edited to name code, report": Case(
        _on_run(_edit_settings(_hostile), "report", "{run}", "-o", "{tmp}/report.html"),
        2,
        "settings",
    ),
    "settings edited, resume": Case(_resume(_edit_settings(_more_rounds)), 2, "settings"),
}


def _snapshot(directory: Path) -> dict[str, bytes]:
    if not directory.exists():
        return {}
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != "run.lock"
    }


def _tracebacks(text: str) -> list[str]:
    """Tracebacks in ``text``, but those of multiprocessing's resource tracker in Dask's
    worker processes (their noise, not the command's)."""
    blocks = text.split("Traceback (most recent call last):")[1:]
    return [b for b in blocks if "resource_tracker" not in b.split("\n\n")[0][:400]]


@pytest.mark.parametrize("name", list(CASES))
def test_a_fault_ends_in_its_one_line_and_loses_nothing(name, finished, tmp_path, capfd):
    case = CASES[name]
    runs = tmp_path / "runs"
    shutil.copytree(finished, runs)
    (tmp_path / "catalogue_hostile.py").write_text(HOSTILE)
    argv = case.setup(runs, tmp_path)
    before = _snapshot(runs)
    capfd.readouterr()
    cwd = os.getcwd()
    os.chdir(tmp_path)  # where the hostile module could be imported from
    try:
        status = sbi_rounds(argv)
    except SystemExit as exit:  # argparse's own refusals, as the command's exit status
        status = exit.code
    finally:
        os.chdir(cwd)
    out, err = capfd.readouterr()
    assert status == case.status, f"{name}: exit {status}\n{out}{err}"
    assert not _tracebacks(out + err), f"{name}:\n{out}{err}"
    if status != 0:
        assert err.count("error: ") == 1, f"{name}:\n{err}"
        assert case.fragment in err[err.index("error: ") :], f"{name}:\n{err}"
    assert _snapshot(runs) == before, f"{name}: the command changed the run's files"
    assert not (tmp_path / "catalogue_hostile.imported").exists(), "code named in a run ran"


#: Faults of a run in a read-only directory (made read-only by ``test_read_only``'s fixture):
#: ``(arguments, exit status, fragment of the error)``.
READ_ONLY = {
    "read-only run, status": (["status", "{run}"], 0, ""),
    "read-only run, verify": (["verify", "{run}"], 0, ""),
    "read-only run, export elsewhere": (["export", "{run}", "-o", "{tmp}/out.npz"], 0, ""),
    "read-only run, report to its default place": (["report", "{run}"], 2, "-o"),
    "read-only run, resume": (None, 2, "read-only"),
}


@pytest.mark.parametrize("name", list(READ_ONLY))
def test_a_read_only_run_is_read_and_a_resume_refused(name, finished, read_only, tmp_path, capfd):
    argv, expected, fragment = READ_ONLY[name]
    runs = tmp_path / "runs"
    shutil.copytree(finished, runs)
    read_only(runs / "r")
    if argv is None:
        argv = _run_argv(runs)
    argv = [a.replace("{run}", str(runs / "r")).replace("{tmp}", str(tmp_path)) for a in argv]
    before = _snapshot(runs)
    capfd.readouterr()
    status = sbi_rounds(argv)
    out, err = capfd.readouterr()
    assert status == expected, f"{name}: exit {status}\n{out}{err}"
    assert not _tracebacks(out + err), f"{name}:\n{out}{err}"
    if status != 0:
        assert err.count("error: ") == 1 and fragment in err[err.index("error: ") :], err
    assert _snapshot(runs) == before


def test_the_catalogue_covers_every_kind_of_fault():
    kinds = {
        "bad flags": ("unknown flag", "wrong value"),
        "bad settings": ("unknown setting in a config file", "scheduler address without a port"),
        "bad input files": ("empty observation file",),
        "disk full": ("disk too small for the run",),
        "failing and hanging simulators": (
            "simulator that is not there",
            "simulator returning text",
            "simulator that hangs",
            "simulator failing on every chunk",
        ),
        "truncated and missing files": (
            "truncated round file, verify",
            "missing round file, status",
        ),
        "damaged bytes in each kind of dataset": (
            "damaged parameters, verify",
            "damaged simulations, verify",
            "damaged posterior samples, verify",
            "damaged network weights, verify",
        ),
        "hostile settings": ("settings edited to name code, verify", "settings edited, resume"),
    }
    assert {c for cases in kinds.values() for c in cases} <= set(CASES)
    assert {"read-only run, status", "read-only run, resume"} <= set(READ_ONLY)
