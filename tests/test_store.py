"""The HDF5 run store: layout, in-place and copy-on-write commits, bad files."""

from __future__ import annotations

import example_records
import h5py
import numpy as np
import pytest
import torch

from sbi_rounds.store import FORMAT_VERSION, RunFileError, RunStore, Stage, TrainedNetwork


@pytest.fixture
def store(tmp_path):
    return RunStore.create(tmp_path / "r" / "run.h5", config={"a": 1}, fingerprint="abc")


def _plan(store, round_=1, n=10, chunk=4):
    return store.plan_round(
        round_,
        num_simulations=n,
        theta_dim=2,
        x_dim=3,
        chunk_size=chunk,
        num_posterior_samples=5,
        proposal={"kind": "prior"},
    )


def test_create_and_open(store):
    again = RunStore.open(store.path)
    assert again.read_config() == {"a": 1} and again.fingerprint() == "abc"
    assert again.rounds() == [] and again.stage(1) is None
    with pytest.raises(RunFileError, match="exists already"):
        RunStore.create(store.path, config={}, fingerprint="x")


def test_plan_writes_layout_and_chunks_commit_in_place(store):
    info = _plan(store)
    assert (info.num_chunks, info.chunk_bounds(2), info.stage) == (3, (8, 10), Stage.PLANNED)
    store.write_theta(1, 0, np.ones((10, 2)))
    assert store.round_info(1).theta_done == 10
    assert store.pending_chunks(1) == [0, 1, 2]
    x = np.arange(12.0).reshape(4, 3)
    x[1, 0] = np.nan
    store.write_chunk(1, 1, x, seconds=0.5)
    assert store.pending_chunks(1) == [0, 2]
    theta, xs, valid = store.read_simulations(1)
    np.testing.assert_array_equal(xs[4:8], x)
    assert valid[4:8].tolist() == [True, False, True, True] and not valid[:4].any()
    assert np.isnan(xs[:4]).all()


def test_a_held_open_file_commits_chunks_and_survives_structural_commits(store):
    _plan(store)
    store.write_theta(1, 0, np.ones((10, 2)))
    with store.held_open():
        store.write_chunks(1, [(0, np.zeros((4, 3)), 0.1), (2, np.ones((2, 3)), 0.2)])
        # another process (a reader) sees the commit while the handle stays open
        assert RunStore.open(store.path).pending_chunks(1) == [1]
        store.write_seconds_per_simulation(1, 0.5)  # copy-on-write: closes and reopens
        store.write_chunk(1, 1, np.full((4, 3), 2.0), seconds=0.3)
        assert store.pending_chunks(1) == []
    assert store._held is None
    again = RunStore.open(store.path)
    assert again.seconds_per_simulation(1) == 0.5
    np.testing.assert_array_equal(again.read_simulations(1)[1][:, 0], [0] * 4 + [2] * 4 + [1] * 2)


def test_chunks_committed_together_in_any_order_land_in_their_rows(tmp_path):
    store = RunStore.create(tmp_path / "run.h5", config={}, fingerprint="x")
    store.plan_round(
        1,
        num_simulations=23,
        theta_dim=2,
        x_dim=3,
        chunk_size=3,
        num_posterior_samples=5,
        proposal={"kind": "prior"},
    )
    # chunks 7 (the short last one, 2 rows), 1, 2, 3 and 5, out of order: three runs
    chunks = [(c, np.full((2 if c == 7 else 3, 3), float(c)), 0.1 * c) for c in (5, 3, 7, 1, 2)]
    chunks[1][1][0, 0] = np.inf
    store.write_chunks(1, chunks)
    assert store.pending_chunks(1) == [0, 4, 6]
    _, x, valid = store.read_simulations(1)
    for c, rows, _ in chunks:
        np.testing.assert_array_equal(x[3 * c : 3 * c + len(rows)], rows)
    assert np.isnan(x[[0, 1, 2, 12, 13, 14, 18, 19, 20]]).all()
    assert np.flatnonzero(valid).tolist() == [3, 4, 5, 6, 7, 8, 10, 11, 15, 16, 17, 21, 22]
    np.testing.assert_allclose(store.chunk_seconds(1)[[1, 2, 3, 5, 7]], [0.1, 0.2, 0.3, 0.5, 0.7])
    assert np.isnan(store.chunk_seconds(1)[[0, 4, 6]]).all()


def test_stages_only_move_forward(store):
    _plan(store)
    store.set_stage(1, Stage.TRAINED)
    store.set_stage(1, Stage.SAMPLED)
    assert store.stage(1) == Stage.TRAINED


def test_network_and_history_round_trip(store):
    _plan(store)
    net = torch.nn.Linear(2, 3)
    store.write_network(
        1,
        TrainedNetwork(
            weights=net.state_dict(),
            architecture=example_records.architecture(model="lin"),
            history={"val_loss": [3.0, 2.0]},
            summary=example_records.training_summary(),
        ),
    )
    weights, arch = store.read_network(1)
    assert arch == example_records.architecture(model="lin")
    assert store.training_summary(1) == example_records.training_summary()
    assert torch.equal(weights["weight"], net.weight.detach())
    assert store.read_history(1)["val_loss"].tolist() == [3.0, 2.0]


def test_checkpoint_sink_replaces_its_state(store):
    _plan(store)
    sink = store.checkpoint_sink(1)
    assert sink.load() is None
    sink.save({"epoch": 1, "w": torch.zeros(2)})
    sink.save({"epoch": 2, "w": torch.ones(2)})
    state = sink.load()
    assert state["epoch"] == 2 and torch.equal(state["w"], torch.ones(2))


def test_a_failed_structural_commit_leaves_the_file_unchanged(store):
    _plan(store)
    before = store.path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"), store._structural() as f:
        f.create_group("junk")
        raise RuntimeError("boom")
    assert store.path.read_bytes() == before
    assert not list(store.path.parent.glob("run.h5.tmp-*"))


def test_stale_temporaries_are_removed(store):
    stale = store.path.with_name("run.h5.tmp-12345")
    stale.write_bytes(b"half a copy")
    assert store.remove_stale_temporaries() == [stale] and not stale.exists()


def _offsets(path):
    """``{dataset: offset}`` of the file ``path``."""
    offsets = {}

    def add(name, obj):
        if isinstance(obj, h5py.Dataset):
            offsets[name] = obj.id.get_offset()

    with h5py.File(path, "r", locking=False) as f:
        f.visititems(add)
    return offsets


def _layout(path):
    """``{file name: (size, {dataset: offset})}`` of the run file and its bulk files."""
    return {p.name: (p.stat().st_size, _offsets(p)) for p in sorted(path.parent.rglob("*.h5"))}


def test_in_place_commits_change_no_hdf5_metadata(store):
    """Chunk, theta, sample and stage commits rewrite data bytes only, never the structure,
    neither of the run file nor of the round's bulk files; the first chunk creates the file
    of the round's simulations (linked when the round was planned) and changes nothing else.
    """
    _plan(store)
    planned = _layout(store.path)
    assert sorted(planned) == ["run.h5", "run.round-0001.h5"]
    with h5py.File(store.path, "r") as f:  # every array of the round is in its data file
        g = f["rounds/0001"]
        linked = {k for k in g if isinstance(g.get(k, getlink=True), h5py.ExternalLink)}
    assert linked == {"theta", "theta_done", "x", "valid", "chunk_done", "chunk_seconds"} | {
        "posterior_samples",
        "samples_done",
    }
    store.write_theta(1, 0, np.ones((10, 2)))
    store.write_chunk(1, 0, np.ones((4, 3), dtype=np.float32), 0.1)
    first = _layout(store.path)
    assert {k: v for k, v in first.items() if k in planned} == planned
    assert sorted(first) == ["run.h5", "run.round-0001.h5", "run.round-0001.x.h5"]
    store.write_chunk(1, 1, np.ones((4, 3)), 0.1)
    store.write_samples(1, 0, np.ones((5, 2)))
    store.set_stage(1, Stage.SIMULATED)
    store.record_timing(1, "simulate", 1.5)
    assert _layout(store.path) == first
    assert store.read_simulations(1)[1].dtype == np.float32  # the first chunk's dtype


@pytest.mark.parametrize("content", [b"", b"not an hdf5 file at all", None])
def test_bad_files_get_clear_errors_and_are_not_touched(tmp_path, store, content):
    path = tmp_path / "bad.h5"
    if content is None:  # a truncated run file
        _plan(store)
        path.write_bytes(store.path.read_bytes()[:2000])
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    with pytest.raises(RunFileError, match="not a readable HDF5 run file.*Nothing was changed"):
        RunStore.open(path)
    assert path.read_bytes() == before


def test_other_hdf5_files_and_newer_formats_are_refused(tmp_path, store):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(RunFileError, match="not an sbi-rounds run file"):
        RunStore.open(tmp_path / "other.h5")
    with h5py.File(store.path, "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(RunFileError, match="newer sbi-rounds.*pip install -U"):
        RunStore.open(store.path)


def test_run_files_hold_no_pickled_or_opaque_data(store):
    _plan(store)
    store.checkpoint_sink(1).save({"a": [1, 2.0, "s", None], "t": torch.ones(2)})
    bad = []

    def visit(name, obj):
        if (
            isinstance(obj, h5py.Dataset)
            and obj.dtype.kind in ("O", "V")
            and h5py.check_string_dtype(obj.dtype) is None
        ):
            bad.append(name)

    with h5py.File(store.path, "r") as f:
        f.visititems(visit)
    assert bad == []
