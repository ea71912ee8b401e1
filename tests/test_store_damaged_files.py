"""Round files truncated or missing, and settings edited outside sbi-rounds, on the store and
the commands that read it (``verify``, ``export``, ``status``), with real files.

The end-to-end cases (a real run, the damage, ``verify --repair``, the run's command again)
are in ``test_recovery.py``.
"""

from __future__ import annotations

import json
import os
import sys

import h5py
import numpy as np
import pytest
from test_store_repair import X, _finished_round

from flows.cli.main import main as sbi_rounds
from sbi_rounds.config import SimulatorConfig
from sbi_rounds.lifecycle.fingerprint import code_fingerprint, simulator_unavailable
from sbi_rounds.store import POSTERIOR_SAMPLES, SIMULATIONS, DamagedRunError, RunStore, Stage


@pytest.fixture
def store(tmp_path):
    store = RunStore.create(
        tmp_path / "r" / "run.h5",
        config={"xobs": [0, 0, 0], "simulator": {"kind": "batched", "path": "m:f"}},
        fingerprint="abc",
    )
    for r in (1, 2, 3):
        _finished_round(store, r)
    return store


def _damage(store, how):
    """Round 2's data file truncated (as ``truncate -s``) or deleted."""
    data = store.path.parent / "rounds" / "run.round-0002.h5"
    if how == "truncated":
        os.truncate(data, data.stat().st_size // 2)
    else:
        data.unlink()
    return data.relative_to(store.path.parent).as_posix()


def _recomputed(store, round_):
    """Round ``round_``'s parameters and simulations again, as the stages commit them."""
    store.write_theta(round_, 0, np.ones((10, 2)) * round_)
    store.set_stage(round_, Stage.SAMPLED)
    store.write_chunks(round_, [(0, X[:4], 0.1), (1, X[4:8], 0.1), (2, X[8:], 0.1)])
    store.set_stage(round_, Stage.SIMULATED)
    store.set_counts(round_, 10, 10)
    store.seal(round_, SIMULATIONS)
    store.set_stage(round_, Stage.APPENDED)


@pytest.mark.parametrize("how", ["truncated", "missing"])
def test_a_damaged_round_file_is_named_and_repaired_from_the_seed(store, how):
    name = _damage(store, how)
    damage = store.verify()
    assert {d.round for d in damage} == {2}
    problem = "is missing" if how == "missing" else "cannot be read"
    assert all(f"its file {name} {problem}" in d.problem for d in damage), damage
    assert store.damaged_rounds() == {2: f"its file {name} {problem}"}
    with pytest.raises(DamagedRunError) as raised:
        store.check_intact()
    lines = str(raised.value).splitlines()  # one line for the file, naming what it held
    assert lines[1].startswith(f"  round 2's file {name} {problem}"), lines
    assert lines[1].endswith("parameters, parameter mark, validity marks are lost"), lines
    assert lines[2].startswith("Nothing was changed. Repair it with: sbi-rounds verify")
    lines = store.repair()
    assert len(lines) == 1 and "round 2's parameters" in lines[0], lines
    assert "recomputes its parameters (drawn again from its proposal), simulations" in lines[0]
    assert "DONE -> PLANNED" in lines[0]
    assert store.verify() == [] and store.damaged_rounds() == {}
    info = store.round_info(2)
    assert info.stage == Stage.PLANNED and info.theta_done == 0 and info.samples_done == 0
    assert store.pending_chunks(2) == [0, 1, 2] and store.has_network(2)  # kept
    assert [store.stage(r) for r in (1, 3)] == [Stage.DONE, Stage.DONE]
    # the same values again pass the checksums the lost ones had
    _recomputed(store, 2)
    store.write_samples(2, 0, np.full((5, 2), 0.5, dtype=np.float32))
    store.seal(2, POSTERIOR_SAMPLES)
    assert store.verify() == []
    assert store.read_theta(2).tobytes() == (np.ones((10, 2), np.float32) * 2).tobytes()


def test_parameters_that_differ_from_the_lost_ones_are_refused(store):
    from sbi_rounds.store.checksums import NotReproducedError

    _damage(store, "truncated")
    store.repair()
    store.write_theta(2, 0, np.zeros((10, 2)))  # another proposal, or another seed
    store.write_chunks(2, [(0, X[:4], 0.1), (1, X[4:8], 0.1), (2, X[8:], 0.1)])
    with pytest.raises(NotReproducedError, match="round 2's parameters, computed again"):
        store.seal(2, SIMULATIONS)


def test_a_missing_simulations_file_is_damage_not_rows_to_simulate(store):
    (store.path.parent / "rounds" / "run.round-0001.x.h5").unlink()
    for checked in (True, False):
        with pytest.raises(DamagedRunError, match="its file rounds/run.round-0001.x.h5 is missing"):
            store.read_simulations(1, checked=checked)
    assert [d.path for d in store.verify()] == ["/rounds/0001/x"]
    store.repair()  # left out, to be simulated again: rows not committed yet, not damage
    theta, x, valid = store.read_simulations(1)
    assert np.isnan(x).all() and not valid.any() and store.stage(1) == Stage.SAMPLED


def test_the_shape_of_lost_parameters_comes_from_another_round(tmp_path):
    """A round file lost whole: the number of parameters from round 1's (format 2)."""
    store = RunStore.create(tmp_path / "run.h5", config={"xobs": [0, 0, 0]}, fingerprint="a")
    _finished_round(store, 1)
    _finished_round(store, 2)
    (tmp_path / "rounds" / "run.round-0001.h5").unlink()
    store.repair()
    assert store.round_info(1).theta_dim == 2
    _recomputed(store, 1)
    assert store.verify() == []


def test_export_and_status_read_the_intact_rounds_and_name_the_damaged_one(store, tmp_path, capsys):
    name = _damage(store, "truncated")
    run = store.path.parent
    out = tmp_path / "e.npz"
    assert sbi_rounds(["export", str(run), "-o", str(out)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err.count("error: ") == 1
    assert f"round(s) 2 of {run} are damaged and were left out" in captured.err
    assert f"its file {name} cannot be read" in captured.err
    assert f"sbi-rounds verify {run} --repair" in captured.err
    with np.load(out) as exported:
        assert {k for k in exported if k.startswith("round_")} == {
            f"round_{r:03d}_{k}"
            for r in (1, 3)
            for k in ("theta", "x", "valid", "posterior_samples")
        }
        np.testing.assert_array_equal(exported["round_003_x"], X)
        assert list(exported["parameter_names"]) == ["theta_1", "theta_2"]
    assert sbi_rounds(["status", str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[3:6]}
    assert rows["1"][1] == "done" and rows["2"][1:3] == ["damaged", "-"] and rows["3"][1] == "done"
    assert f"  round 2 is damaged: its file {name} cannot be read" in lines
    assert f"  repair with: sbi-rounds verify {run} --repair" in lines


def test_sealed_arrays_damaged_in_place_are_left_out_of_an_export(store, tmp_path, capsys):
    """Bytes changed with the file's size and time kept: found when export reads them."""
    x_file = store.path.parent / "rounds" / "run.round-0003.x.h5"
    sealed = x_file.stat()
    with h5py.File(store.path, "r") as f:
        offset = f["rounds/0003/x"].id.get_offset()
    with open(x_file, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 8)
    os.utime(x_file, ns=(sealed.st_atime_ns, sealed.st_mtime_ns))
    out = tmp_path / "e.npz"
    assert sbi_rounds(["export", str(store.path.parent), "-o", str(out)]) == 1
    assert "round 3's simulations are damaged" in capsys.readouterr().err
    with np.load(out) as exported:
        assert "round_003_x" not in exported and "round_002_x" in exported


def test_edited_settings_are_named_by_verify_and_refused_by_repair_and_readers(store, capsys):
    store.update_config({**store.read_config(), "rounds": 4}, ["rounds: 3 -> 4"])
    assert store.verify() == []  # sbi-rounds' own changes keep the checksum
    before = store.path.read_bytes()
    with h5py.File(store.path, "r+") as f:
        config = json.loads(f.attrs["config"])
        config["prior"] = {"path": "somemodule:prior"}
        f.attrs["config"] = json.dumps(config)
    edited = store.path.read_bytes()
    assert [d.path for d in store.verify()] == ["/@settings"]
    run = str(store.path.parent)
    assert sbi_rounds(["verify", run]) == 1
    err = capsys.readouterr().err
    assert "the run's stored settings are damaged" in err and "changed outside sbi-rounds" in err
    assert "cannot be repaired" in err and "export" not in err
    assert sbi_rounds(["verify", run, "--repair"]) == 1
    assert "the run's stored settings" in capsys.readouterr().err
    assert store.path.read_bytes() == edited != before
    for command in (["status", run], ["export", run, "-o", str(store.path.parent / "e.npz")]):
        assert sbi_rounds(command) == 2, command
        assert "stored settings are damaged" in "".join(capsys.readouterr())


def test_a_run_file_from_before_settings_checksums_is_not_refused(store):
    from sbi_rounds.store.checksums import SETTINGS_ATTR

    with h5py.File(store.path, "r+") as f:
        del f.attrs[SETTINGS_ATTR]
    assert store.verify() == []
    store.update_config(store.read_config(), ["a change"])  # stamped from now on
    with h5py.File(store.path, "r") as f:
        assert SETTINGS_ATTR in f.attrs
    assert store.verify() == []


def test_a_repair_that_needs_a_simulator_that_cannot_reproduce_is_refused(store, capsys):
    _damage(store, "truncated")
    before = {p: p.read_bytes() for p in store.path.parent.rglob("*") if p.is_file()}
    reason = "the simulator changed (simulator.module: sha256:1 -> sha256:2)"
    with pytest.raises(DamagedRunError) as raised:
        store.repair(simulator_problem=lambda: reason)
    message = str(raised.value)
    assert "its file rounds/run.round-0002.h5 cannot be read" in message
    assert f"needs round(s) 2's simulations simulated again, but {reason}" in message
    assert "Nothing was changed" in message and "--repair" not in message
    assert {p: p.read_bytes() for p in store.path.parent.rglob("*") if p.is_file()} == before
    assert store.repair(simulator_problem=lambda: None)  # a simulator that can


def test_a_repair_that_simulates_nothing_does_not_ask_about_the_simulator(store):
    with h5py.File(store.path, "r") as f:
        offset = f["rounds/0002/posterior_samples"].id.get_offset()
    with open(store.path.parent / "rounds" / "run.round-0002.h5", "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 8)

    def asked():
        raise AssertionError("the simulator is not needed")

    assert "posterior samples left out" in store.repair(simulator_problem=asked)[0]


def test_simulator_unavailable_compares_without_importing(tmp_path, monkeypatch):
    """A module or program that changed or is gone, found by its file, nothing imported."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    marker = tmp_path / "imported"
    module = tmp_path / "sim_for_repair.py"
    module.write_text(f"open({str(marker)!r}, 'w').close()\ndef f(theta):\n    return theta\n")
    sim = SimulatorConfig(path="sim_for_repair:f")
    recorded = {"simulator": {"module": code_fingerprint(sim, _box())["simulator"]["module"]}}
    marker.unlink()
    sys.modules.pop("sim_for_repair", None)
    assert simulator_unavailable(sim, recorded) is None
    module.write_text(module.read_text() + "# changed\n")
    assert simulator_unavailable(sim, recorded).startswith("the simulator changed (simulator.")
    module.unlink()
    assert "module sim_for_repair is no longer there" in simulator_unavailable(sim, recorded)
    assert not marker.exists()  # nothing was imported
    program = tmp_path / "simulate.sh"
    program.write_text("#!/bin/sh\n")
    command = SimulatorConfig(kind="command", command=[str(program), "{input}", "{output}"])
    recorded = {"simulator": code_fingerprint(command, _box())["simulator"]}
    assert simulator_unavailable(command, recorded) is None
    program.unlink()
    assert "no longer installed" in simulator_unavailable(command, recorded)


def _box():
    from sbi_rounds.config import PriorConfig

    return PriorConfig(low=[0.0], high=[1.0])
