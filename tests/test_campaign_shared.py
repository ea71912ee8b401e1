"""A campaign's shared first round: simulated once, every observation's run starts from it."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_rounds.campaign import observation_configs, shared_round_config
from sbi_rounds.config import CampaignConfig
from sbi_rounds.round import run_round
from sbi_rounds.session import run_session
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
    simulated = 0
    for ours, alone in zip(
        observation_configs(shared, settings), observation_configs(separate, settings), strict=True
    ):
        for config in (ours, alone):
            with run_session(config) as run:
                for r in (1, 2):
                    done = run_round(run, r, dask_client, pairplot=False)
                    simulated += done.stages["simulate"].details["simulations_run"]
        a, b = RunStore.open(ours.run_path), RunStore.open(alone.run_path)
        for r in (1, 2):  # the same prior draws and seed: the same rounds as a separate run
            assert np.array_equal(a.read_samples(r), b.read_samples(r)), (ours.run_id, r)
        assert a.round_info(1).proposal["imported"]["source"].endswith("shared-round/run.h5")
    assert simulated == 2 * 100 + 2 * 200  # round 2 of each shared run, all of each separate
