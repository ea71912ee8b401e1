"""The run directory's layout (``sbi_rounds.store.layout``): a new run keeps its round files,
checks, report and figures in folders of their own; a run in the flat layout of earlier
versions (``tests/data/flat-run``, every file side by side) still opens with every reader and
resumes in its own layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from flows.cli.main import main as sbi_rounds
from sbi_rounds.config import RunConfig
from sbi_rounds.diagnostics import diagnose
from sbi_rounds.lifecycle.session import run_session
from sbi_rounds.report.document import write_report
from sbi_rounds.report.results import load_posterior
from sbi_rounds.stages.round import run_round
from sbi_rounds.store import RunStore, Stage
from sbi_rounds.store.layout import RunLayout

FLAT_RUN = Path(__file__).parent / "data" / "flat-run"


def _tree(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*"))


@pytest.fixture
def flat_run(tmp_path):
    """A copy of the flat-layout run (the tests write to it)."""
    target = tmp_path / "runs" / "flat-run"
    shutil.copytree(FLAT_RUN, target)
    return target


@pytest.mark.parametrize(
    ("files", "flat"),
    [
        ([], False),
        (["run.h5", "rounds/run.round-0001.h5", "report/report.html"], False),
        (["run.h5", "run.round-0001.h5"], True),
        (["run.h5", "diagnostics.h5"], True),
        (["run.h5", "report.html"], True),
        (["run.h5", "round_001_pairplot.png"], True),
    ],
)
def test_the_layout_is_told_by_the_files_at_the_top(tmp_path, files, flat):
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    layout = RunLayout.of(tmp_path)
    assert layout.flat is flat
    assert layout.run_file == tmp_path / "run.h5" and layout.lock == tmp_path / "run.lock"
    if flat:
        assert layout.report == tmp_path / "report.html" and layout.figures == tmp_path
        assert layout.checks_file == tmp_path / "diagnostics.h5" and layout.bulk_folder == ""
    else:
        assert layout.report == tmp_path / "report" / "report.html"
        assert layout.figure("a.png") == tmp_path / "report" / "figures" / "a.png"
        assert layout.checks_file == tmp_path / "checks" / "diagnostics.h5"
        assert layout.bulk_folder == "rounds"


def _config(run_dir: Path, **changes) -> RunConfig:
    settings = {
        "xobs": [0.5, -0.3],
        "rounds": 1,
        "simulations_per_round": 50,
        "run_dir": str(run_dir),
        "run_id": "r",
        "training": {"max_epochs": 2, "batch_size": 25, "checkpoint_every": 0},
        "network": {"model": "maf", "hidden_features": 8, "num_transforms": 1},
        "posterior": {"num_samples": 30},
        "logger": {"backend": "none"},
        "cluster": {"workers": 1, "chunk_size": 25},
        "diagnostics": {"predictive_simulations": 10, "calibration_simulations": 10},
    }
    return RunConfig(**{**settings, **changes})


def test_a_new_run_keeps_rounds_checks_and_report_in_folders(tmp_path, dask_client):
    config = _config(tmp_path)
    with run_session(config) as run:
        run_round(run, 1, dask_client)
        diagnose(run, 1, dask_client)
    directory = config.run_path.parent
    report = write_report(directory)
    assert report == directory / "report" / "report.html"
    assert _tree(directory) == [
        "checks",
        "checks/diagnostics.h5",
        *(f"checks/diagnostics.round-000{s}{x}.h5" for s in (0, 1) for x in ("", ".x")),
        "report",
        "report/figures",
        "report/figures/calibration_coverage.png",
        "report/figures/calibration_ranks.png",
        "report/figures/round_001_pairplot.png",
        "report/figures/round_001_predictive.png",
        "report/report.html",
        "rounds",
        "rounds/run.round-0001.h5",
        "rounds/run.round-0001.x.h5",
        "run.h5",
        "run.lock",
    ]
    # the run file links its round files and names its figures relative to the directory
    with h5py.File(directory / "run.h5", "r") as f:
        link = f["rounds/0001"].get("x", getlink=True)
        assert link.filename == "rounds/run.round-0001.x.h5"
    store = RunStore.open(directory / "run.h5")
    assert store.posterior_summary(1).pairplot == "report/figures/round_001_pairplot.png"
    assert store.calibration(1).figures["ranks"] == "report/figures/calibration_ranks.png"
    html = report.read_text()
    assert html.count("data:image/png") >= 4 and "is missing from" not in html
    # moved as a whole, it opens where it lands
    moved = shutil.move(directory, tmp_path / "elsewhere")
    assert RunStore.open(Path(moved) / "run.h5").verify() == []


def test_a_flat_run_opens_with_every_reader(flat_run, tmp_path, capfd):
    layout = RunLayout.of(flat_run)
    assert layout.flat and layout.report == flat_run / "report.html"
    assert sbi_rounds(["status", str(flat_run)]) == 0
    assert "2 of 2 rounds done" in capfd.readouterr().out
    assert sbi_rounds(["verify", str(flat_run)]) == 0
    assert "intact" in capfd.readouterr().out
    assert sbi_rounds(["export", str(flat_run), "-o", str(tmp_path / "e.npz")]) == 0
    assert np.load(tmp_path / "e.npz")["round_002_theta"].shape == (50, 2)
    # the report goes where the flat layout has it, its figures found beside it
    assert sbi_rounds(["report", str(flat_run)]) == 0
    html = (flat_run / "report.html").read_text()
    assert html.count("data:image/png") >= 4 and "is missing from" not in html
    assert not (flat_run / "report").exists()
    samples = load_posterior(flat_run).sample((10,), show_progress_bars=False)
    assert samples.shape == (10, 2) and np.isfinite(samples.numpy()).all()


def test_a_flat_run_resumes_in_its_own_layout(flat_run, dask_client):
    before = _tree(flat_run)
    stored = RunStore.open(flat_run / "run.h5").read_config()
    config = RunConfig(**{**stored, "rounds": 3, "run_dir": str(flat_run.parent)})
    with run_session(config, accept_changed_code=True) as run:
        assert run.layout.flat
        run_round(run, 3, dask_client)
        diagnose(run, 3, dask_client)
    write_report(flat_run)
    store = RunStore.open(flat_run / "run.h5")
    assert store.stage(3) == Stage.DONE and store.verify() == []
    new = sorted(set(_tree(flat_run)) - set(before))
    assert new == [
        "diagnostics.round-0003.h5",
        "diagnostics.round-0003.x.h5",
        "report.html",
        "round_003_pairplot.png",
        "round_003_predictive.png",
        "run.lock",
        "run.round-0003.h5",
        "run.round-0003.x.h5",
    ]
    assert store.posterior_summary(3).pairplot == "round_003_pairplot.png"
    assert load_posterior(flat_run, round=3) is not None
