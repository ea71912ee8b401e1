"""Campaigns: the observations table, the command line, and a campaign killed and resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from pydantic import ValidationError

from flows.cli.campaign import main
from flows.cli.run import build_config, parse_args
from sbi_rounds.campaign import (
    format_summary,
    load_observations,
    observation_configs,
    summarize,
    write_summary_html,
)
from sbi_rounds.config import CampaignConfig
from sbi_rounds.lifecycle.session import run_session
from sbi_rounds.stages.round import run_round
from sbi_rounds.store import RunStore, Stage
from sbi_rounds.store.layout import RunLayout

ROOT = Path(__file__).resolve().parent.parent
ROWS = np.array([[0.5, -0.3], [0.1, 0.2], [-0.4, 0.6]])


@pytest.mark.parametrize("kind", ["csv", "npy", "h5"])
def test_observations_load_one_per_row_from_each_file_kind(tmp_path, kind):
    path = tmp_path / f"obs.{kind}"
    if kind == "csv":
        np.savetxt(path, ROWS, delimiter=",")
    elif kind == "npy":
        np.save(path, ROWS)
    else:
        with h5py.File(path, "w") as f:
            f["data/xobs"] = ROWS
    spec = f"{path}:data/xobs" if kind == "h5" else str(path)
    assert np.array_equal(load_observations(spec), ROWS)
    configs = observation_configs(CampaignConfig(observations=spec, directory="c"), {"rounds": 2})
    assert [c.xobs for c in configs] == ROWS.tolist()
    assert [str(c.run_path) for c in configs] == [f"c/obs-000{i}/run.h5" for i in range(3)]


def test_bad_tables_and_settings_the_campaign_sets_are_refused(tmp_path):
    np.save(tmp_path / "nan.npy", np.array([[1.0, 2.0], [np.nan, 0.0]]))
    with pytest.raises(ValueError, match=r"rows \[1\] hold NaN"):
        load_observations(str(tmp_path / "nan.npy"))
    np.save(tmp_path / "ok.npy", ROWS)
    campaign = CampaignConfig(observations=str(tmp_path / "ok.npy"))
    with pytest.raises(ValueError, match="a campaign sets xobs"):
        observation_configs(campaign, {"xobs": [1.0, 2.0]})
    with pytest.raises(ValidationError, match="max_concurrent"):
        CampaignConfig(observations="x.csv", max_concurrent=0)


def test_the_command_refuses_bad_input_in_a_second(tmp_path, capsys):
    np.savetxt(tmp_path / "obs.csv", ROWS, delimiter=",")
    assert main(["--observations", str(tmp_path / "obs.csv"), "--xobs", "1", "2"]) == 2
    assert "xobs given by a flag: a campaign sets them" in capsys.readouterr().err
    assert main(["--observations", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--observations", str(tmp_path / "obs.csv"), "--bogus"])
    out = main(
        [
            "--observations",
            str(tmp_path / "obs.csv"),
            "--max-concurrent",
            "3",
            "--rounds",
            "4",
            "--print-config",
        ]
    )
    printed = capsys.readouterr().out
    assert out == 0 and "max_concurrent: 3" in printed and "rounds: 4" in printed


def test_a_summary_before_anything_ran_lists_every_observation_as_waiting(tmp_path):
    np.save(tmp_path / "obs.npy", ROWS)
    campaign = CampaignConfig(observations=str(tmp_path / "obs.npy"), directory=str(tmp_path / "c"))
    rows = summarize(observation_configs(campaign, {}))
    assert [r["status"] for r in rows] == ["waiting"] * 3
    assert "obs-0002     waiting  0/3" in format_summary(rows)
    page = write_summary_html(rows, campaign.directory).read_text()
    assert page.count("<tr>") == 4 and "href" not in page  # no report yet: no link


# --- a campaign killed mid-way and restarted ------------------------------------------------

SHARED = [
    "--rounds",
    "2",
    "--simulations-per-round",
    "100",
    "--seed",
    "5",
    "--simulator",
    "test_simulation_helpers:sleepy",
    "--simulator.kwargs",
    "seconds_per_simulation=0.03",
    "--network",
    "maf",
    "--hidden-features",
    "20",
    "--num-transforms",
    "2",
    "--max-epochs",
    "8",
    "--batch-size",
    "50",
    "--num-samples",
    "100",
    "--map-iterations",
    "0",
    "--predictive-simulations",
    "20",
    "--logger",
    "none",
    "--calibration-simulations",
    "0",
    "--workers",
    "2",
    "--chunk-size",
    "10",
    "--no-dashboard",
]


def _env(tmp_path: Path, name: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PREFECT_HOME": str(tmp_path / name)}


def _state(directory: Path) -> dict[str, dict[int, dict[str, float]]]:
    """Per observation, the timings of each finished round (they grow when a round is redone)."""
    state = {}
    for path in sorted(directory.glob("obs-*/run.h5")):
        store = RunStore.open(path)
        state[path.parent.name] = {
            r: store.timings(r).by_stage() for r in store.rounds() if store.stage(r) == Stage.DONE
        }
    return state


@pytest.mark.slow
@pytest.mark.timeout(1200)  # about 3 minutes here on a quiet machine, 9 on a busy one
def test_a_campaign_killed_midway_resumes_and_matches_separate_runs(tmp_path, dask_client):
    np.savetxt(tmp_path / "obs.csv", ROWS, delimiter=",")
    directory = tmp_path / "campaign"
    command = [
        sys.executable,
        "-m",
        "flows.cli.main",
        "campaign",
        "--observations",
        str(tmp_path / "obs.csv"),
        "--campaign-dir",
        str(directory),
        "--max-concurrent",
        "2",
        *SHARED,
    ]
    first = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=_env(tmp_path, "p1"),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while True:  # kill once one observation is finished and another is under way
        assert first.poll() is None and time.monotonic() < deadline, "the campaign ended first"
        state = _state(directory)
        finished = [o for o in state if RunLayout.of(directory / o).report.exists()]
        if finished and len(state) >= 2:
            os.killpg(first.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    first.wait()
    before = _state(directory)
    mtimes = {o: (directory / o / "run.h5").stat().st_mtime_ns for o in finished}
    assert any(len(rounds) < 2 for rounds in before.values()) or len(before) < 3
    again = subprocess.run(
        command, cwd=tmp_path, env=_env(tmp_path, "p1"), capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    printed = again.stdout + again.stderr
    assert f"{len(finished)} finished, {3 - len(finished)} to run" in printed
    after = _state(directory)
    for observation in [o for o in after if 2 not in before.get(o, {})]:  # ran round 2 now:
        assert f"{observation}: round 2/2 done: " in printed, printed[-3000:]  # its lines say whose
    assert "Beginning subflow run" not in printed  # the engine's lines only with -v
    assert "posterior checks:" not in printed  # no run's own tables: the summary has them
    assert "observation  status" in printed
    assert printed.count("campaign summary: ") == 1, printed[-3000:]  # the page, said once
    for observation, rounds in before.items():  # no finished round ran again
        assert {r: after[observation][r] for r in rounds} == rounds
    for observation in finished:  # finished observations were not even opened for writing
        assert (directory / observation / "run.h5").stat().st_mtime_ns == mtimes[observation]
    # The same settings run alone, in this process (the command line's runs are proven
    # the same as the library's elsewhere; Prefect servers would cost more than the runs).
    for i, row in enumerate(ROWS):
        args = parse_args(["--xobs", *map(str, row), "--run-dir", str(tmp_path / "separate")]
                          + ["--run-id", f"r{i}", *SHARED])  # fmt: skip
        with run_session(build_config(args)) as run:
            for r in (1, 2):
                run_round(run, r, dask_client, pairplot=False)
    for i in range(3):
        ours = RunStore.open(directory / f"obs-000{i}" / "run.h5")
        alone = RunStore.open(tmp_path / "separate" / f"r{i}" / "run.h5")
        for r in (1, 2):
            assert np.array_equal(ours.read_samples(r), alone.read_samples(r)), (i, r)
            assert np.array_equal(ours.read_simulations(r)[1], alone.read_simulations(r)[1])
    page = (directory / "summary.html").read_text()
    assert all(f'href="obs-000{i}/report/report.html"' in page for i in range(3))
    assert "3 observations, 3 finished" in page
