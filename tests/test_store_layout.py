"""The run store's layout (format 2): a small run file, bulk files per round in ``rounds/``
written in place, files of killed commits removed, damage to bulk files found and repaired."""

from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pytest

from sbi_rounds.store import POSTERIOR_SAMPLES, SIMULATIONS, DamagedRunError, RunStore, Stage
from sbi_rounds.store.bulk import create_bulk_file

X = np.arange(30.0, dtype=np.float32).reshape(10, 3)


@pytest.fixture
def store(tmp_path):
    return RunStore.create(tmp_path / "r" / "run.h5", config={"xobs": [0, 0, 0]}, fingerprint="a")


def _plan(store, round_=1, n=10, x_dtype="auto"):
    return store.plan_round(
        round_,
        num_simulations=n,
        theta_dim=2,
        x_dim=3,
        chunk_size=4,
        num_posterior_samples=5,
        proposal={"kind": "prior"},
        x_dtype=x_dtype,
    )


def _simulated(store, round_=1):
    _plan(store, round_)
    store.write_theta(round_, 0, np.ones((10, 2)))
    store.write_chunks(round_, [(0, X[:4], 0.1), (1, X[4:8], 0.1), (2, X[8:], 0.1)])
    store.set_stage(round_, Stage.SIMULATED)
    store.seal(round_, SIMULATIONS)
    store.set_stage(round_, Stage.APPENDED)


def test_the_run_file_stays_small_whatever_the_rounds_hold(store):
    _plan(store, n=200_000)  # 200,000 x 3 simulations: 2.4 MB as float32
    store.write_chunk(1, 0, np.zeros((4, 3), dtype=np.float32), 0.1)
    files = {p.name: p.stat().st_size for p in store.path.parent.rglob("*.h5")}
    assert files["run.h5"] < 100_000
    assert files["run.round-0001.x.h5"] > 200_000 * 3 * 4
    assert files["run.round-0001.h5"] > 200_000 * (2 * 4 + 1)


@pytest.mark.parametrize(
    ("x_dtype", "given", "stored"),
    [
        ("auto", np.float32, np.float32),
        ("auto", np.float64, np.float64),
        ("auto", np.int64, np.float64),
        ("float64", np.float32, np.float64),
        ("float32", np.float64, np.float32),
    ],
)
def test_simulations_are_stored_as_returned_or_as_configured(store, x_dtype, given, stored):
    _plan(store, x_dtype=x_dtype)
    store.write_chunk(1, 2, np.ones((2, 3), dtype=given), 0.1)
    store.write_chunk(1, 0, np.ones((4, 3), dtype=np.float64), 0.1)  # later chunks follow
    x = store.read_simulations(1)[1]
    assert x.dtype == stored and np.isnan(x[4:8]).all() and (x[8:] == 1).all()


def test_no_simulation_yet_reads_as_nan_and_is_not_damage(store):
    _plan(store)
    assert not (store.path.parent / "rounds" / "run.round-0001.x.h5").exists()
    x = store.read_simulations(1)[1]
    assert x.shape == (10, 3) and np.isnan(x).all() and store.round_info(1).x_dim == 3
    assert store.verify() == []


def test_files_of_killed_commits_are_removed_at_the_next_open(store):
    _plan(store)
    directory = store.path.parent
    # a round planned by a commit killed after its data file was made: nothing links it
    create_bulk_file(
        directory / "rounds" / "run.round-0002.h5", {"a": ((3,), np.uint8, 0)}, durable=False
    )
    (directory / "rounds" / "run.round-0003.h5.tmp-123").write_bytes(b"half a file")
    (directory / "run.h5.tmp-123").write_bytes(b"half a copy")
    removed = {p.name for p in store.remove_stale_temporaries()}
    assert removed == {"run.round-0002.h5", "run.round-0003.h5.tmp-123", "run.h5.tmp-123"}
    assert sorted(p.name for p in directory.rglob("*.h5*")) == ["run.h5", "run.round-0001.h5"]
    _plan(store, 2)  # and the round is planned again
    assert store.rounds() == [1, 2] and store.verify() == []


def test_the_run_directory_moves_as_a_whole(store, tmp_path):
    _simulated(store)
    moved = shutil.copytree(store.path.parent, tmp_path / "elsewhere")
    shutil.rmtree(store.path.parent)
    again = RunStore.open(moved / "run.h5")
    np.testing.assert_array_equal(again.read_simulations(1)[1], X)
    assert again.verify() == []


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_damaged_bulk_data_is_found_and_repaired_into_a_new_data_file(store):
    _simulated(store)
    with h5py.File(store.path, "r") as f:
        offset = f["rounds/0001/theta"].id.get_offset()
    _flip(store.path.parent / "rounds" / "run.round-0001.h5", offset)
    damage = store.verify()
    assert [str(d) for d in damage] == [
        "round 1's parameters are damaged (/rounds/0001/theta: its values do not match "
        "their checksum)"
    ]
    lines = store.repair()
    assert "round 1's parameters left out" in lines[0] and "-> PLANNED" in lines[0]
    with h5py.File(store.path, "r") as f:
        link = f["rounds/0001"].get("theta", getlink=True)
        assert link.filename == "rounds/run.round-0001.1.h5"  # beside the file it replaces
    assert store.verify() == [] and store.round_info(1).theta_done == 0
    assert store.pending_chunks(1) == [0, 1, 2]  # parameters drawn again: simulated again
    assert [p.name for p in store.remove_stale_temporaries()] == [
        "run.round-0001.h5",
        "run.round-0001.x.h5",
    ]
    store.write_theta(1, 0, np.ones((10, 2)))  # the same values again
    store.write_chunks(1, [(0, X[:4], 0.1), (1, X[4:8], 0.1), (2, X[8:], 0.1)])
    store.seal(1, SIMULATIONS)
    assert store.verify() == []


def test_the_start_up_check_reads_sealed_round_files_only_if_they_changed(store):
    """``check_intact`` reads a sealed round's bulk data only if its file changed since it
    was sealed; damage that leaves size and modification time alone (bits rotting on a
    disk) is found when the data is read, and by ``verify``, which reads everything."""
    _simulated(store)
    x_file = store.path.parent / "rounds" / "run.round-0001.x.h5"
    with h5py.File(store.path, "r") as f:
        offset = f["rounds/0001/x"].id.get_offset()
    sealed = x_file.stat()
    _flip(x_file, offset)
    named = "round 1's simulations are damaged"
    with pytest.raises(DamagedRunError, match=named):
        store.check_intact()  # written since it was sealed: read
    os.utime(x_file, ns=(sealed.st_atime_ns, sealed.st_mtime_ns))
    store.check_intact()  # as sealed, by its size and time: only opened
    with pytest.raises(DamagedRunError, match=named) as error:
        store.read_simulations(1)
    assert "verify" in str(error.value) and "--repair" in str(error.value)
    assert [d.path for d in store.verify()] == ["/rounds/0001/x"]
    with pytest.raises(DamagedRunError, match=named):
        store.check_intact(deep=True)


def test_a_lost_simulations_file_is_found_and_simulated_again(store):
    _simulated(store)
    (store.path.parent / "rounds" / "run.round-0001.x.h5").unlink()
    assert [d.path for d in store.verify()] == ["/rounds/0001/x"]
    lines = store.repair()
    assert "round 1's simulations left out" in lines[0]
    assert store.stage(1) == Stage.SAMPLED and store.pending_chunks(1) == [0, 1, 2]
    store.write_chunks(1, [(0, X[:4], 0.1), (1, X[4:8], 0.1), (2, X[8:], 0.1)])
    store.seal(1, SIMULATIONS)
    assert store.verify() == []
    np.testing.assert_array_equal(store.read_simulations(1)[1], X)
    store.write_samples(1, 0, np.ones((5, 2)))
    store.seal(1, POSTERIOR_SAMPLES)
    assert store.verify() == []


def test_round_files_of_a_run_file_that_cannot_be_read_are_kept(store):
    _simulated(store)
    directory = store.path.parent
    (directory / "rounds" / "run.round-0002.h5.tmp-123").write_bytes(b"half a file")
    store.path.write_bytes(store.path.read_bytes()[:2000])  # the run file truncated
    removed = [p.name for p in store.remove_stale_temporaries()]
    assert removed == ["run.round-0002.h5.tmp-123"]
    assert sorted(p.name for p in directory.glob("rounds/run.round-*")) == [
        "run.round-0001.h5",
        "run.round-0001.x.h5",
    ]


def test_simulations_are_allocated_at_planning_once_their_dtype_is_known(store):
    _plan(store)  # nothing known: with the first chunk
    assert not (store.path.parent / "rounds" / "run.round-0001.x.h5").exists()
    store.write_chunk(1, 0, np.ones((4, 3), dtype=np.float32), 0.1)
    _plan(store, 2)  # as the round before: at planning, so no chunk waits for disk space
    assert store.read_simulations(2)[1].dtype == np.float32
    other = RunStore.create(store.path.parent / "other.h5", config={}, fingerprint="b")
    other.note_simulated_dtype(np.float64)  # the simulator's start-up check
    _plan(other)
    assert other.read_simulations(1)[1].dtype == np.float64
    assert (store.path.parent / "rounds" / "other.round-0001.x.h5").exists()
    _plan(other, 2, x_dtype="float32")  # or as set
    assert other.read_simulations(2)[1].dtype == np.float32 and other.verify() == []


def test_a_run_file_made_before_the_folder_keeps_its_round_files_beside_it(tmp_path):
    flat = RunStore.create(tmp_path / "run.h5", config={}, fingerprint="a", bulk_folder="")
    with h5py.File(flat.path, "r+") as f:  # as run files of earlier versions: no attribute
        del f.attrs["bulk_folder"]
    _simulated(flat)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "run.h5",
        "run.round-0001.h5",
        "run.round-0001.x.h5",
    ]
    (tmp_path / "rounds").mkdir()
    (tmp_path / "rounds" / "run.round-0002.h5.tmp-1").write_bytes(b"half a file")
    (tmp_path / "run.round-0002.h5.tmp-1").write_bytes(b"half a file")
    assert [p.name for p in flat.remove_stale_temporaries()] == ["run.round-0002.h5.tmp-1"] * 2
    np.testing.assert_array_equal(flat.read_simulations(1)[1], X)
