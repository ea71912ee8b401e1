"""A run written by run file format 1 (``tests/data/format1-run``) still works: opened,
verified, reported, its posterior loaded, and extended by a round."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from sbi_rounds.config import RunConfig
from sbi_rounds.lifecycle.session import run_session
from sbi_rounds.report.document import write_report
from sbi_rounds.report.results import load_posterior, table
from sbi_rounds.stages.round import run_round
from sbi_rounds.store import FORMAT_VERSION, RunStore, Stage

FORMAT1_RUN = Path(__file__).parent / "data" / "format1-run"


@pytest.fixture
def old_run(tmp_path):
    """A copy of the format-1 run (the tests write to it)."""
    target = tmp_path / "runs" / "format1-run"
    shutil.copytree(FORMAT1_RUN, target)
    return target


def test_a_format1_run_opens_verifies_reports_and_loads_its_posterior(old_run):
    with h5py.File(old_run / "run.h5", "r") as f:
        assert f.attrs["format_version"] == 1
    store = RunStore.open(old_run / "run.h5")
    assert store.verify() == []
    assert store.rounds() == [1, 2] and store.stage(2) == Stage.DONE
    theta, x, valid = store.read_simulations(2)
    assert theta.shape == (50, 2) and x.shape == (50, 2) and valid.all()
    rows = table(old_run)
    assert [row.simulations for row in rows] == [50, 50]
    report = write_report(old_run).read_text()
    assert "Round 2" in report or "round 2" in report
    posterior = load_posterior(old_run)
    samples = posterior.sample((20,), show_progress_bars=False)
    assert samples.shape == (20, 2) and np.isfinite(samples.numpy()).all()


def test_a_format1_run_is_extended_by_a_round(old_run, dask_client):
    stored = RunStore.open(old_run / "run.h5").read_config()
    config = RunConfig(**{**stored, "rounds": 3, "run_dir": str(old_run.parent)})
    with run_session(config, accept_changed_code=True) as run:
        result = run_round(run, 3, dask_client, pairplot=False)
    assert "simulate" in result.stages
    store = RunStore.open(old_run / "run.h5")
    assert store.rounds() == [1, 2, 3] and store.stage(3) == Stage.DONE
    assert store.verify() == []
    assert store.read_samples(3).shape == (50, 2)
    # the new round has the new layout (round files beside run.h5); the file says format 2
    assert sorted(p.name for p in old_run.glob("run.round-*")) == [
        "run.round-0003.h5",
        "run.round-0003.x.h5",
    ]
    with h5py.File(old_run / "run.h5", "r") as f:
        assert f.attrs["format_version"] == FORMAT_VERSION == 2
    # float64 as format 1 stored them; the new round's as the simulator returns them
    assert store.read_simulations(2)[1].dtype == np.float64
    assert store.read_simulations(3)[1].dtype == np.float32
    assert load_posterior(old_run, round=3) is not None
    # the old rounds are as they were
    old = RunStore.open(FORMAT1_RUN / "run.h5")
    for r in (1, 2):
        np.testing.assert_array_equal(store.read_simulations(r)[1], old.read_simulations(r)[1])
        np.testing.assert_array_equal(store.read_samples(r), old.read_samples(r))
