"""A campaign's shared first round: simulated once, every observation's run starts from it."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_rounds.campaign import observation_configs, shared_round_config
from sbi_rounds.config import CampaignConfig
from sbi_rounds.lifecycle.session import run_session
from sbi_rounds.stages.round import run_round
from sbi_rounds.store import RunStore

ROWS = np.array([[0.5, -0.3], [0.1, 0.2]])


def _campaign(tmp_path, name, shared):
    np.save(tmp_path / "obs.npy", ROWS)
    return CampaignConfig(
        observations=str(tmp_path / "obs.npy"),
        directory=str(tmp_path / name),
        shared_first_round=shared,
    )


def test_the_setting_points_every_run_at_the_shared_round_and_off_changes_nothing(tmp_path):
    on = observation_configs(_campaign(tmp_path, "on", True), {"rounds": 2})
    off = observation_configs(_campaign(tmp_path, "off", False), {"rounds": 2})
    first = shared_round_config(_campaign(tmp_path, "on", True), {"rounds": 2})
    assert first.rounds == 1 and first.diagnostics.predictive_simulations == 0
    assert {c.start_from.simulations for c in on} == {str(first.run_path)}
    assert all(c.start_from is None for c in off)  # a separate run's settings exactly
    assert [c.resolved_run_id for c in on] == [c.resolved_run_id for c in off]
    with pytest.raises(ValueError, match="cannot also start them from start_from"):
        observation_configs(
            _campaign(tmp_path, "on", True),
            {"start_from": {"simulations": "bank.npz", "drawn_from": "prior"}},
        )


@pytest.mark.slow
def test_a_shared_first_round_gives_each_observation_a_separate_runs_result(
    tmp_path, make_config, dask_client
):
    base = make_config(simulations_per_round=100, training={"max_epochs": 5})
    settings = base.model_dump(mode="json", exclude={"xobs", "run_dir", "run_id"})
    settings = {k: v for k, v in settings.items() if v is not None}
    shared, separate = _campaign(tmp_path, "shared", True), _campaign(tmp_path, "separate", False)
    with run_session(shared_round_config(shared, settings)) as run:
        run_round(run, 1, dask_client, pairplot=False)
        trained_once = run.store.training_summary(1)
    simulated = 0
    for ours, alone in zip(
        observation_configs(shared, settings), observation_configs(separate, settings), strict=True
    ):
        for config in (ours, alone):
            with run_session(config) as run:
                for r in (1, 2):
                    done = run_round(run, r, dask_client, pairplot=False)
                    simulated += done.stages["simulate"].details.simulations_run
        a, b = RunStore.open(ours.run_path), RunStore.open(alone.run_path)
        for r in (1, 2):  # the same prior draws and seed: the same rounds as a separate run
            assert np.array_equal(a.read_samples(r), b.read_samples(r)), (ours.run_id, r)
        assert a.round_info(1).proposal["imported"]["source"].endswith("shared-round/run.h5")
        # round 1 trained once: adopted from the shared run (its wall time too), not repeated
        assert a.training_summary(1) == trained_once != b.training_summary(1)
    assert simulated == 2 * 100 + 2 * 200  # round 2 of each shared run, all of each separate


SHARED = [
    "--rounds", "2", "--simulations-per-round", "100", "--seed", "3",
    "--simulator", "test_simulation_helpers:sleepy", "--simulator.kwargs",
    "seconds_per_simulation=0.02", "--network", "maf", "--hidden-features", "20",
    "--num-transforms", "2", "--max-epochs", "8", "--batch-size", "50", "--num-samples", "100",
    "--map-iterations", "0", "--predictive-simulations", "10", "--logger", "none",
    "--calibration-simulations", "0", "--workers", "2", "--chunk-size", "20", "--no-dashboard",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(2400)  # 18 minutes on a busy shared machine
def test_a_campaign_killed_in_its_shared_round_resumes_without_simulating_it_again(
    tmp_path, dask_client
):
    import os
    import signal
    import subprocess
    import sys
    import time

    from flows.cli.run import build_config, parse_args
    from sbi_rounds.store import Stage

    np.savetxt(tmp_path / "obs.csv", ROWS, delimiter=",")
    directory = tmp_path / "campaign"
    command = [sys.executable, "-m", "flows.cli.main", "campaign", "--observations",
               str(tmp_path / "obs.csv"), "--campaign-dir", str(directory),
               "--campaign.shared-first-round", *SHARED]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PREFECT_HOME": str(tmp_path / "p")}
    first = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    path, deadline = directory / "shared-round" / "run.h5", time.monotonic() + 300
    while True:  # killed once the shared round's simulations are committed, before it ends
        assert first.poll() is None and time.monotonic() < deadline, "the campaign ended first"
        try:
            if path.exists() and (RunStore.open(path).stage(1) or 0) >= Stage.SIMULATED:
                os.killpg(first.pid, signal.SIGKILL)
                break
        except OSError:  # being written: look again
            pass
        time.sleep(0.1)
    first.wait()
    before = RunStore.open(path).timings(1).by_stage()["simulate"]
    assert not (directory / "obs-0000" / "run.h5").exists()  # none started before it
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=900)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert RunStore.open(path).timings(1).by_stage()["simulate"] == before  # not redone
    for i, row in enumerate(ROWS):  # the same as a separate run of that observation
        args = parse_args(["--xobs", *map(str, row), "--run-dir", str(tmp_path / "alone"),
                           "--run-id", f"r{i}", *SHARED])  # fmt: skip
        with run_session(build_config(args)) as run:
            for r in (1, 2):
                run_round(run, r, dask_client, pairplot=False)
        ours = RunStore.open(directory / f"obs-000{i}" / "run.h5")
        alone = RunStore.open(tmp_path / "alone" / f"r{i}" / "run.h5")
        assert ours.round_info(1).proposal["imported"]["rows"] == 100
        for r in (1, 2):
            assert np.array_equal(ours.read_samples(r), alone.read_samples(r)), (i, r)


@pytest.mark.parametrize(
    ("change", "adopted"),
    [({}, True), ({"seed": 1}, False), ({"training": {"max_epochs": 4}}, False)],
    ids=["same-settings", "another-seed", "another-training-setting"],
)
def test_round_one_adopts_the_shared_training_only_when_it_would_repeat_it(
    tmp_path, make_config, dask_client, change, adopted
):
    base = make_config(simulations_per_round=100, training={"max_epochs": 3}, rounds=1)
    settings = base.model_dump(mode="json", exclude={"xobs", "run_dir", "run_id"})
    settings = {k: v for k, v in settings.items() if v is not None}
    campaign = _campaign(tmp_path, "c", True)
    with run_session(shared_round_config(campaign, settings)) as run:
        run_round(run, 1, dask_client, pairplot=False)
        shared = run.store.training_summary(1), run.store.training_attempts(1)
    training = {**settings["training"], **change.get("training", {})}
    config = observation_configs(campaign, {**settings, **change, "training": training})[1]
    with run_session(config) as run:
        run_round(run, 1, dask_client, pairplot=False)
        ours = run.store.training_summary(1), run.store.training_attempts(1)
    assert (ours == shared) is adopted
