"""``run_round``: the six stages in order, skipping what is done, stopped by its token."""

from __future__ import annotations

import pytest

from sbi_rounds.errors import RunInterrupted
from sbi_rounds.lifecycle.session import run_session
from sbi_rounds.report.table import round_table
from sbi_rounds.runtime.cancel import CancelToken
from sbi_rounds.stages.round import STAGES, run_round
from sbi_rounds.store import RunStore, Stage


def test_a_round_runs_every_stage_once_and_then_skips_them(make_config, dask_client):
    config = make_config(rounds=1)
    calls = []

    def client():
        calls.append(1)
        return dask_client

    with run_session(config) as run:
        first = run_round(run, 1, client, pairplot=False)
        again = run_round(run, 1, client, pairplot=False)
    assert list(first.stages) == [
        "sample",
        "simulate",
        "append",
        "train",
        "posterior",
        "checkpoint",
    ]
    assert not any(r.skipped for r in first.stages.values())
    assert "simulate" not in again.stages and all(r.skipped for r in again.stages.values())
    assert calls == [1]  # the cluster is asked for only while simulations are due
    store = RunStore.open(config.run_path)
    assert store.stage(1) == Stage.DONE and round_table(store)[0].simulations == 300
    timings = store.timings(1).by_stage()
    assert all(
        timings[k] > 0
        for k in ("sample", "simulate", "append", "train", "posterior", "checkpoint", "commit")
    )
    assert STAGES.train.__name__ == "train"


def test_a_cancelled_token_stops_the_round_between_stages(make_config, dask_client):
    config = make_config(rounds=1)
    token = CancelToken()
    token.cancel("a test")
    with run_session(config) as run:
        with pytest.raises(RunInterrupted, match="stopped before sampling the proposal of round 1"):
            run_round(run, 1, dask_client, token=token)
        assert run.store.rounds() == []

    class CancelAfterSampling:
        """A stage table whose sampling cancels the token, as a signal would."""

        def __init__(self):
            self.token = CancelToken()

        def __getattr__(self, name):
            stage = getattr(STAGES, name)
            if name != "sample":
                return stage

            def sample(run, round_):
                result = stage(run, round_)
                self.token.cancel("after sampling")
                return result

            return sample

    table = CancelAfterSampling()
    with run_session(config) as run:
        with pytest.raises(RunInterrupted, match="stopped before simulating of round 1"):
            run_round(run, 1, dask_client, token=table.token, table=table)
        assert run.store.stage(1) == Stage.SAMPLED
