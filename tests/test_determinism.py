"""Same seed, same answer: an interrupted run equals an uninterrupted one, 1 worker equals 3."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sbi_rounds import stages
from sbi_rounds.cluster import open_client
from sbi_rounds.config import ClusterConfig
from sbi_rounds.stages import RunInterrupted, run_session
from sbi_rounds.stages.round import run_round
from sbi_rounds.store import RunStore
from sbi_rounds.training import Callback

ROUNDS = 2
SLOW = {
    "path": "sbi_rounds.examples:slow_linear_gaussian",
    "kwargs": {"seconds_per_simulation": 0.004},
}


def _config(make_config, run_dir, **overrides):
    return make_config(
        rounds=ROUNDS,
        simulations_per_round=300,
        simulator=SLOW,
        training={
            "max_epochs": 12,
            "batch_size": 100,
            "checkpoint_every": 3,
            "checkpoint_min_seconds": 0,
        },
        # A commit per chunk: the interrupted run stops after its second committed chunk.
        cluster={"chunk_size": 50, "commit_interval": 0},
        run_id="same-seed",
        run_dir=str(run_dir),
        **overrides,
    )


def _uninterrupted(config, client):
    with run_session(config) as run:
        for r in range(1, ROUNDS + 1):
            run_round(run, r, client, pairplot=False)
    return RunStore.open(config.run_path)


class _InterruptAt(Callback):
    """Stops the training (as Ctrl-C does) before epoch ``epoch + 1``, once."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_start(self, loop):
        if loop.state.epoch == self.epoch:
            raise RunInterrupted(f"test interrupt at epoch {self.epoch}")


def _assert_same(a: RunStore, b: RunStore):
    assert a.rounds() == b.rounds() == list(range(1, ROUNDS + 1))
    for r in a.rounds():
        for got, want in zip(a.read_simulations(r), b.read_simulations(r), strict=True):
            np.testing.assert_array_equal(got, want)
        wa, arch_a = a.read_network(r)
        wb, arch_b = b.read_network(r)
        assert arch_a == arch_b and wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wb), f"round {r} weights differ"
        ha, hb = a.read_history(r), b.read_history(r)
        for key in ("train_loss", "val_loss"):
            np.testing.assert_array_equal(ha[key], hb[key])
        np.testing.assert_array_equal(a.read_samples(r), b.read_samples(r))
        assert a.round_info(r).proposal == b.round_info(r).proposal


#: Settings of the vector-field methods' runs: their network, and fewer samples to set the
#: truncation threshold (each an ODE solve).
VECTOR_FIELD = {
    method: {
        "method": method,
        "network": {"model": None, "num_transforms": 5},
        method: {"num_samples_to_estimate": 1000},
    }
    for method in ("tfmpe", "tnpse")
}


@pytest.mark.parametrize(
    "method",
    [
        "snpe",
        pytest.param("tfmpe", marks=pytest.mark.slow),
        pytest.param("tnpse", marks=pytest.mark.slow),
    ],
)
def test_an_interrupted_and_resumed_run_equals_an_uninterrupted_one(
    make_config, dask_client, tmp_path, method
):
    """Stopped mid-simulation and mid-training in every round, each time resumed in a new
    session (as a restarted process would), the run ends with the same simulations,
    weights, losses and posterior samples as a run never stopped (for TFMPE and TNPSE also
    the same truncated proposal: its threshold is recomputed in the new session)."""
    extra = VECTOR_FIELD.get(method, {})
    reference = _uninterrupted(_config(make_config, tmp_path / "reference", **extra), dask_client)
    config = _config(make_config, tmp_path / "interrupted", **extra)
    for r in range(1, ROUNDS + 1):
        with run_session(config) as run:
            stages.sample_proposal(run, r)
            total = run.store.round_info(r).num_chunks

            def two_chunks_done(run=run, r=r, total=total):
                return len(run.store.pending_chunks(r)) <= total - 2

            with pytest.raises(RunInterrupted):
                stages.simulate(run, r, dask_client, should_stop=two_chunks_done)
            assert 0 < len(run.store.pending_chunks(r)) < total
        with run_session(config) as run:
            result = stages.simulate(run, r, dask_client)
            assert result.details.chunks_skipped >= 2
            stages.append_simulations(run, r)
            with pytest.raises(RunInterrupted):
                stages.train(run, r, callbacks=[_InterruptAt(7)])
            assert run.store.checkpoint_sink(r).load()["epoch"] == 6
        with run_session(config) as run:
            assert stages.train(run, r).details.resumed_from_epoch == 6
            stages.build_posterior(run, r)
            stages.checkpoint(run, r, pairplot=False)
    _assert_same(RunStore.open(config.run_path), reference)


def test_one_worker_and_three_workers_give_the_same_run(make_config, tmp_path):
    """Chunk seeds come from (run seed, round, chunk): neither the number of workers nor
    the order in which chunks finish changes a bit of the result."""
    stores = []
    for workers in (1, 3):
        config = _config(make_config, tmp_path / f"workers-{workers}")
        with open_client(ClusterConfig(workers=workers)) as client:
            assert len(client.nthreads()) == workers
            stores.append(_uninterrupted(config, client))
    _assert_same(*stores)
