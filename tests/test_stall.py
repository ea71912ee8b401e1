"""Stalled trainings: detected against a reference, retrained with a new seed, recorded."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from sbi_rounds import stages
from sbi_rounds.config import NetworkConfig, StallConfig
from sbi_rounds.diagnostics import round_alerts
from sbi_rounds.seeding import derive_seed
from sbi_rounds.stages import RunInterrupted, run_session
from sbi_rounds.stages.stall import check_stall, gaussian_baseline_losses
from sbi_rounds.store import RunStore
from sbi_rounds.training import Callback, TrainConfig


def test_the_gaussian_baseline_is_the_exact_loss_of_a_linear_gaussian_model():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, 3, generator=g)
    w = torch.tensor([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0]])
    theta = x @ w + 0.7 + 0.2 * torch.randn(20_000, 2, generator=g)
    losses = gaussian_baseline_losses(theta[:15_000], x[:15_000], theta[15_000:], x[15_000:])
    exact = -torch.distributions.Normal(x[15_000:] @ w + 0.7, 0.2).log_prob(theta[15_000:])
    assert losses.shape == (5_000,)
    assert abs(float(losses.mean()) - float(exact.sum(1).mean())) < 0.02


def test_the_margin_is_per_modelled_dimension():
    config = StallConfig(margin=0.5, significance=3.0)
    losses = torch.full((100,), 2.0) + 0.1 * torch.randn(100)
    assert check_stall(losses, torch.zeros(100), "gaussian", config, dims=2).stalled
    assert not check_stall(losses, torch.zeros(100), "gaussian", config, dims=10).stalled


def test_a_stall_needs_both_the_margin_and_significance():
    config = StallConfig(margin=1.0, significance=3.0)
    ref = torch.zeros(100)
    assert check_stall(ref + 2.0 + 0.1 * torch.randn(100), ref, "gaussian", config).stalled
    assert not check_stall(ref + 0.5, ref, "gaussian", config).stalled  # below the margin
    noisy = torch.tensor([40.0] + [-0.2] * 9)  # mean 3.8, but one row carries it
    check = check_stall(noisy, torch.zeros(10), "gaussian", config)
    assert check.excess > 1.0 and not check.stalled
    for bad in (float("nan"), float("inf")):  # a network with non-finite losses failed
        assert check_stall(torch.tensor([0.0, bad]), torch.zeros(2), "x", config).stalled
    # a reference that is not finite proves nothing
    assert not check_stall(torch.zeros(5), torch.full((5,), float("nan")), "x", config).stalled


class CutShort(Callback):
    """Stops the fit that trains with ``seed`` after one epoch: a provoked stall."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_epoch_end(self, loop) -> None:
        if loop.config.seed == self.seed:
            loop.request_stop("cut short by the test")


class InterruptOnce(Callback):
    """Raises RunInterrupted once, at ``epoch`` of the fit that trains with ``seed``."""

    def __init__(self, seed: int, epoch: int) -> None:
        self.seed, self.epoch, self.fired = seed, epoch, False

    def on_epoch_end(self, loop) -> None:
        if loop.config.seed == self.seed and loop.state.epoch == self.epoch and not self.fired:
            self.fired = True
            raise RunInterrupted("interrupted by the test")


def _train_seed(config, round_, attempt):
    keys = ("train",) if attempt == 0 else ("train", attempt)
    return derive_seed(config.seed, round_, *keys) % 2**63 % 2**31


def _config(make_config, **overrides):
    settings = {
        "rounds": 1,
        "simulations_per_round": 1000,
        "training": {"max_epochs": None, "patience": 10, "batch_size": 200},
        "network": {"hidden_features": 30, "num_transforms": 3},
    }
    return make_config(**{**settings, **overrides})


def _round_one(run, client, callbacks=()):
    stages.sample_proposal(run, 1)
    stages.simulate(run, 1, client)
    stages.append_simulations(run, 1)
    return stages.train(run, 1, callbacks)


def test_a_stalled_round_is_detected_retrained_and_recorded(make_config, dask_client, caplog):
    config = _config(make_config)
    with caplog.at_level(logging.WARNING), run_session(config) as run:
        result = _round_one(run, dask_client, [CutShort(_train_seed(config, 1, 0))])
        stages.build_posterior(run, 1)
        stages.checkpoint(run, 1, pairplot=False)
    store = RunStore.open(config.run_path)
    first, second = store.training_attempts(1)
    assert first.stalled and first.reference == "gaussian" and first.epochs == 1
    assert first.excess > 2 * 0.5 and not first.capped
    assert not second.stalled and second.kept and second.epochs > 10
    assert result.details.retrains == 1 and not result.details.stalled
    assert store.training_summary(1).attempt == 1
    assert stages.round_table(store)[0].retrains == 1
    assert "retrained" in stages.format_round_table(stages.round_table(store))
    assert "training again from fresh weights" in caplog.text
    # the kept network is the retrained one: its posterior is near the truth N(xobs, 0.1^2)
    samples = store.read_samples(1)
    np.testing.assert_allclose(samples.mean(0), config.xobs, atol=0.05)


def test_an_interrupted_retrain_resumes_to_the_same_network(make_config, dask_client, tmp_path):
    config = _config(make_config)
    cut = CutShort(_train_seed(config, 1, 0))
    with run_session(config) as run:
        with pytest.raises(RunInterrupted):
            _round_one(run, dask_client, [cut, InterruptOnce(_train_seed(config, 1, 1), 7)])
        assert len(run.store.training_attempts(1)) == 1  # the stalled attempt is committed
        assert run.store.checkpoint_sink(1).load()["epoch"] == 5  # the retrain's checkpoint
        stages.train(run, 1, [cut])
    reference = _config(make_config, run_dir=str(tmp_path / "reference"))
    with run_session(reference) as ref_run:
        _round_one(ref_run, dask_client, [cut])
    a, b = RunStore.open(config.run_path), RunStore.open(reference.run_path)
    assert a.training_attempts(1) == b.training_attempts(1)
    wa, wb = a.read_network(1)[0], b.read_network(1)[0]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_healthy_rounds_are_never_retrained(make_config, dask_client):
    # the project's default network and training settings (the fixture's are cut short);
    # round 2 is checked against round 1's network, as every later round is against its own
    config = make_config(
        rounds=2,
        simulations_per_round=300,
        network=NetworkConfig().model_dump(),
        training=TrainConfig().model_dump(),
    )
    for seed in (0, 1):
        seeded = config.model_copy(update={"seed": seed})
        with run_session(seeded) as run:
            for r in range(1, config.rounds + 1):
                stages.sample_proposal(run, r)
                stages.simulate(run, r, dask_client)
                stages.append_simulations(run, r)
                stages.train(run, r)
                stages.build_posterior(run, r)
                stages.checkpoint(run, r, pairplot=False)
            for r in range(1, config.rounds + 1):
                attempts = run.store.training_attempts(r)
                assert not any(a.stalled for a in attempts), attempts
                assert all(a.fallback for a in attempts[1:])  # no retrain, maybe a fallback
                assert attempts[0].reference == ("gaussian" if r == 1 else "previous_round")


def test_a_training_cut_by_a_limit_is_flagged_but_not_retrained(make_config, dask_client, caplog):
    config = _config(make_config, training={"max_epochs": 1, "batch_size": 200})
    with caplog.at_level(logging.WARNING), run_session(config) as run:
        result = _round_one(run, dask_client)
        (attempt,) = run.store.training_attempts(1)
        alerts = round_alerts(run, 1)
    assert attempt.stalled and attempt.capped and result.details.retrains == 0
    (alert,) = [a for a in alerts if "cap" in a]  # one warning, with the stall and the way out
    assert "reached max_epochs=1" in alert and "raise training.max_epochs" in alert
    assert "(a stall, not retrained: it would stop at the same cap)" in alert
    assert "max_epochs" not in caplog.text  # the stage itself says nothing: no duplicate


def test_max_retrains_zero_keeps_the_first_training(make_config, dask_client, caplog):
    config = _config(make_config, stall={"max_retrains": 0})
    with caplog.at_level(logging.WARNING), run_session(config) as run:
        result = _round_one(run, dask_client, [CutShort(_train_seed(config, 1, 0))])
        (attempt,) = run.store.training_attempts(1)
    assert attempt.stalled and result.details.stalled
    assert "every one of 1 trainings stalled" in caplog.text


def test_round_one_keeps_maf_alone_where_the_posterior_is_gaussian_like(
    make_config, dask_client, caplog
):
    # x = theta + 0.1 eps: MAF fits the held-out rows no better than the linear-Gaussian
    # model, so NSF (slow here, and too wide in sbi's own loop) is never trained
    config = _config(
        make_config,
        network={"model": None, "hidden_features": 30, "num_transforms": 3},
        training={"max_epochs": None, "patience": 10, "batch_size": "auto"},
    )
    with caplog.at_level(logging.INFO), run_session(config) as run:
        result = _round_one(run, dask_client)
        stages.build_posterior(run, 1)
        (attempt,) = run.store.training_attempts(1)
        architecture = run.store.read_network(1)[1]
        samples = run.store.read_samples(1)
        row = stages.round_table(run.store)[0]
    assert attempt.network == "maf" and attempt.kept and not attempt.fallback
    assert attempt.reference == "gaussian" and not attempt.stalled
    assert architecture.model == "maf" and result.details.network == "maf"
    assert row.retrains == 0 and row.network == "maf"
    assert "the posterior is Gaussian-like, keeping maf without training nsf" in caplog.text
    np.testing.assert_array_less(np.abs(samples.std(0) / 0.1 - 1), 0.2)  # the truth: N(xobs, 0.1^2)


def test_round_one_trains_nsf_too_where_maf_beats_the_linear_gaussian_model(
    make_config, dask_client, caplog
):
    # two moons: a crescent posterior that a linear-Gaussian model cannot fit
    config = _config(
        make_config,
        xobs=[0.0, 0.2],
        simulator={"path": "sbi_rounds.examples:two_moons"},
        prior={"low": [-1.0, -1.0], "high": [1.0, 1.0]},
        simulations_per_round=600,
        network={"model": None, "hidden_features": 20, "num_transforms": 2},
        training={"max_epochs": None, "patience": 5, "patience_steps": None, "batch_size": 100},
    )
    with caplog.at_level(logging.INFO), run_session(config) as run:
        result = _round_one(run, dask_client)
        first, second = run.store.training_attempts(1)
        architecture = run.store.read_network(1)[1]
    assert first.network == "maf" and not first.fallback and first.excess < 0
    assert second.network == "nsf" and second.fallback
    kept = "nsf" if second.kept else "maf"
    assert architecture.model == kept == result.details.network
    assert "training nsf too, on the same rows" in caplog.text
    assert f"on the same rows: keeping {kept}" in caplog.text
    assert result.details.retrains == 0


def test_a_network_the_user_chose_is_kept_without_fallback(make_config, dask_client):
    config = _config(
        make_config,
        simulations_per_round=500,
        network={"model": "nsf", "hidden_features": 30, "num_transforms": 3},
        training={"max_epochs": 300, "patience": 15, "batch_size": 100},
    )
    with run_session(config) as run:
        _round_one(run, dask_client)
        (attempt,) = run.store.training_attempts(1)
    assert attempt.network == "nsf" and attempt.excess > 0 and not attempt.fallback
