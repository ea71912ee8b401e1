"""Repairing a damaged run file (``sbi_rounds.store.repair``), on the store alone.

The end-to-end case (damage, ``sbi-rounds verify --repair``, the same command again, a run
equal bit for bit to the undamaged one) is in ``test_recovery.py``.
"""

from __future__ import annotations

import example_records
import h5py
import numpy as np
import pytest
import torch

from sbi_rounds.lifecycle.environment import is_disk_error
from sbi_rounds.store import (
    POSTERIOR_SAMPLES,
    SIMULATIONS,
    DamagedRunError,
    RunStore,
    Stage,
    TrainedNetwork,
)
from sbi_rounds.store.checksums import EXPECTED_ATTR, SETTINGS_ATTR, NotReproducedError

X = np.arange(30.0).reshape(10, 3)


def _finished_round(store, round_):
    """Round ``round_`` through every stage, as the stages commit it."""
    store.plan_round(
        round_,
        num_simulations=10,
        theta_dim=2,
        x_dim=3,
        chunk_size=4,
        num_posterior_samples=5,
        proposal={"kind": "prior"},
    )
    store.write_theta(round_, 0, np.ones((10, 2)) * round_)
    store.set_stage(round_, Stage.SAMPLED)
    store.write_chunks(round_, [(0, X[:4], 0.1), (1, X[4:8], 0.1), (2, X[8:], 0.1)])
    store.set_stage(round_, Stage.SIMULATED)
    store.set_counts(round_, 10, 10)
    store.write_seconds_per_simulation(round_, 0.03, seal_datasets=SIMULATIONS)
    store.set_stage(round_, Stage.APPENDED)
    store.finish_training_attempt(
        round_,
        example_records.attempt(),
        TrainedNetwork(
            weights={"w": torch.arange(64.0).reshape(8, 8)},
            architecture=example_records.architecture(),
            history={"loss": [1.0, 0.5]},
            summary=example_records.training_summary(),
        ),
    )
    store.set_stage(round_, Stage.TRAINED)
    store.write_samples(round_, 0, np.full((5, 2), 0.5, dtype=np.float32))
    store.set_stage(round_, Stage.POSTERIOR)
    store.write_posterior_summary(
        round_, example_records.posterior_summary(), seal_datasets=POSTERIOR_SAMPLES
    )
    store.write_diagnostics(round_, example_records.diagnostics())
    store.set_stage(round_, Stage.DONE)


@pytest.fixture
def store(tmp_path):
    store = RunStore.create(
        tmp_path / "r" / "run.h5", config={"xobs": [0, 0, 0]}, fingerprint="abc"
    )
    for r in (1, 2, 3):
        _finished_round(store, r)
    return store


def _overwrite(path, dataset, header=False):
    """Overwrite ``dataset``'s values (or its header) in the file that holds it (the run
    file, or a round's bulk file)."""
    with h5py.File(path, "r") as f:
        obj = f[dataset]
        offset = h5py.h5o.get_info(obj.id).addr if header else obj.id.get_offset()
        size = 64 if header else obj.id.get_storage_size()
        holder = obj.file.filename
    with open(holder, "r+b") as f:
        f.seek(offset)
        f.write(bytes((i * 37 + 11) % 256 for i in range(size)))


def _contents(path):
    """Every dataset's values (in bulk files too) and every attribute of the file, but the
    history (and the settings' checksum, which covers it) and the names of bulk files (a
    repair may write a new one)."""
    out = {}
    with h5py.File(path, "r") as f:

        def add(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()].tobytes()
            out.update({f"{name}@{k}": str(v) for k, v in obj.attrs.items()})

        f.visititems(add)
        for key, g in f["rounds"].items():
            for name in g:
                if isinstance(g.get(name, getlink=True), h5py.ExternalLink):
                    out[f"rounds/{key}/{name}"] = g[name][()].tobytes()
        history = ("config_history", SETTINGS_ATTR)  # the settings' checksum covers it
        out.update({f"@{k}": str(v) for k, v in f.attrs.items() if k not in history})
    return out


@pytest.mark.parametrize("header", [False, True], ids=["values", "header"])
def test_damaged_weights_are_left_out_and_the_round_goes_back_to_training(store, header):
    before = _contents(store.path)
    _overwrite(
        store.path, "rounds/0002/network/w" if not header else "rounds/0002/network", header=header
    )
    assert [d.round for d in store.verify()] == [2]
    lines = store.repair()
    assert len(lines) == 1 and "round 2's network weights left out" in lines[0]
    assert "recomputes its training, posterior samples" in lines[0]
    assert "DONE -> APPENDED" in lines[0]
    assert store.verify() == []
    assert list(store.path.parent.glob("run.h5.tmp-*")) == []
    assert store.stage(2) == Stage.APPENDED and not store.has_network(2)
    assert store.training_attempts(2) == [] and store.read_samples(2).shape == (0, 2)
    assert store.diagnostics(2) is None and store.posterior_summary(2) is None
    after = _contents(store.path)
    kept = {k: v for k, v in before.items() if not k.startswith("rounds/0002")}
    assert {k: after.get(k) for k in kept} == kept  # rounds 1 and 3, the run's settings
    for name in ("theta", "x", "valid", "chunk_done", "counts"):
        assert after[f"rounds/0002/{name}"] == before[f"rounds/0002/{name}"]
    assert "repair: round 2:" in store.config_history()[-1]["changes"][0]
    with h5py.File(store.path, "r") as f:  # in-place writes still touch data only
        g = f["rounds/0002"]
        assert all(g[k].id.get_offset() is not None for k in g if isinstance(g[k], h5py.Dataset))
    # the stages commit into it again as before
    _finished_round_from_appended(store, 2)
    assert store.verify() == []


def _finished_round_from_appended(store, round_):
    store.finish_training_attempt(
        round_,
        example_records.attempt(),
        TrainedNetwork(
            weights={"w": torch.arange(64.0).reshape(8, 8)},
            architecture=example_records.architecture(),
            history={"loss": [1.0, 0.5]},
            summary=example_records.training_summary(),
        ),
    )
    store.set_stage(round_, Stage.TRAINED)
    store.write_samples(round_, 0, np.full((5, 2), 0.5, dtype=np.float32))
    store.seal(round_, POSTERIOR_SAMPLES)
    store.set_stage(round_, Stage.DONE)


def test_damaged_simulations_are_simulated_again_and_must_match_their_old_checksum(store):
    _overwrite(store.path, "rounds/0001/x")
    lines = store.repair()
    assert "round 1's simulations left out; the next run recomputes its simulations" in lines[0]
    assert store.stage(1) == Stage.SAMPLED and store.pending_chunks(1) == [0, 1, 2]
    assert store.has_network(1) and store.read_samples(1).shape == (5, 2)  # kept: see below
    with h5py.File(store.path, "r") as f:  # (on the round: its simulations are in a bulk file)
        assert f"{EXPECTED_ATTR}:x" in f["rounds/0001"].attrs
    before = store.path.read_bytes()
    store.write_chunks(1, [(0, X[:4] + 1, 0.1), (1, X[4:8], 0.1), (2, X[8:], 0.1)])
    with pytest.raises(NotReproducedError, match="round 1's simulations, computed again"):
        store.seal(1, SIMULATIONS)
    assert list(store.path.parent.glob("run.h5.tmp-*")) == []
    store.write_chunks(1, [(0, X[:4], 0.1)])  # the simulator gives the same values again
    store.seal(1, SIMULATIONS)
    assert store.verify() == [] and store.path.read_bytes() != before


def test_an_intact_file_is_left_untouched(store):
    before = (store.path.read_bytes(), store.path.stat().st_mtime_ns)
    assert store.repair() == []
    assert (store.path.read_bytes(), store.path.stat().st_mtime_ns) == before


@pytest.mark.parametrize("dataset", ["rounds/0002/stage", "rounds/0002"])
def test_damage_that_cannot_be_repaired_is_refused_leaving_the_file_unchanged(store, dataset):
    _overwrite(store.path, dataset, header=True)
    before = store.path.read_bytes()
    with pytest.raises(DamagedRunError, match="This damage cannot be repaired"):
        store.repair()
    assert store.path.read_bytes() == before
    assert list(store.path.parent.glob("run.h5.tmp-*")) == []


@pytest.mark.parametrize("how", ["interrupted", "disk-full"])
def test_a_repair_that_fails_leaves_the_damaged_file_as_it_was(store, monkeypatch, capsys, how):
    import resource
    import signal

    from flows.cli.verify import main as verify

    _overwrite(store.path, "rounds/0002/network/w")
    before = store.path.read_bytes()
    if how == "interrupted":  # a Ctrl-C right before the new file would replace the old

        def interrupted(self, tmp):
            raise KeyboardInterrupt

        monkeypatch.setattr(RunStore, "_publish", interrupted)
        with pytest.raises(KeyboardInterrupt):
            store.repair()
    else:  # a file size limit fails writes like a full disk, in this process
        old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, hard))  # the copy is compacted
        try:
            with pytest.raises((OSError, RuntimeError)) as raised:  # h5py's, or the system's
                store.repair()
            assert is_disk_error(raised.value), raised.value
            assert verify([str(store.path.parent), "--repair"]) == 1
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, old_handler)
        err = capsys.readouterr().err
        assert err.startswith("error: could not write the repaired copy"), err
        assert "File too large" in err
        assert err.count("error: ") == 1 and "MB free in" in err and "Nothing was changed" in err
    assert store.path.read_bytes() == before
    assert list(store.path.parent.glob("run.h5.tmp-*")) == []
