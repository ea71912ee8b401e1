"""Starting a run from simulations you have (``start_from``): stored, trained and resumed as
a simulated round 1, and refused where their origin does not fit the method."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from pydantic import ValidationError

from sbi_rounds.lifecycle.preflight import preflight
from sbi_rounds.lifecycle.session import run_session
from sbi_rounds.report.document import render_report
from sbi_rounds.stages import sample_proposal
from sbi_rounds.stages.round import run_round
from sbi_rounds.store import RunStore, Stage

SMALL = {"simulations_per_round": 100, "training": {"max_epochs": 5}}


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, dask_client):
    """A finished two-round SNPE run on the default simulator: the simulations we 'have'."""
    from sbi_rounds.config import RunConfig

    tmp = tmp_path_factory.mktemp("source")
    config = RunConfig(
        xobs=[0.5, -0.3],
        rounds=2,
        simulations_per_round=100,
        run_dir=str(tmp / "runs"),
        run_id="source",
        training={"max_epochs": 5, "batch_size": 50, "checkpoint_every": 0},
        network={"model": "maf", "hidden_features": 20, "num_transforms": 2},
        posterior={"num_samples": 100},
        logger={"backend": "none"},
        cluster={"chunk_size": 50},
        diagnostics={"calibration_simulations": 0},
    )
    with run_session(config) as run:
        for r in (1, 2):
            run_round(run, r, dask_client, pairplot=False)
    return config


def test_another_runs_prior_round_gives_the_same_first_round(source_run, make_config, tmp_path):
    start = {"simulations": str(source_run.run_path)}
    same = {"max_epochs": 5, "batch_size": 50, "checkpoint_every": 0}  # as the source's
    config = make_config(
        simulations_per_round=100, training=same, start_from=start, posterior={"num_samples": 100}
    )
    assert config.fingerprint() != make_config(**SMALL).fingerprint()  # its own identity
    with run_session(config) as run:
        result = run_round(run, 1, None, pairplot=False)  # no cluster: nothing to simulate
    assert result.stages["simulate"].details.imported == 100
    assert result.stages["simulate"].details.simulations_run == 0
    ours, theirs = RunStore.open(config.run_path), RunStore.open(source_run.run_path)
    assert ours.stage(1) == Stage.DONE
    assert ours.round_info(1).proposal["kind"] == "prior"
    assert ours.round_info(1).proposal["imported"]["source"] == str(source_run.run_path)
    for a, b in zip(ours.read_simulations(1), theirs.read_simulations(1), strict=True):
        assert np.array_equal(a, b)
    # the same pairs and seed train the same network: the round is as if simulated here
    assert np.array_equal(ours.read_samples(1), theirs.read_samples(1))
    assert ours.verify() == []  # stored and checksummed like a simulated round
    with run_session(config) as run:
        assert f"100 pairs from {source_run.run_path}" in render_report(run)


def test_a_bank_of_prior_draws_starts_a_run_that_resumes_from_it(
    make_config, tmp_path, dask_client
):
    rng = np.random.default_rng(1)
    theta = rng.uniform(-2, 2, (80, 2))
    x = theta + 0.1 * rng.normal(size=theta.shape)
    x[3] = np.nan  # kept, marked invalid, left out of training
    np.savez(tmp_path / "bank.npz", theta=theta, x=x)
    start = {"simulations": str(tmp_path / "bank.npz"), "drawn_from": "prior"}
    config = make_config(**SMALL, start_from=start)
    preflight(config)
    with run_session(config) as run:
        sample_proposal(run, 1)  # stopped here: planned and its parameters written
    with run_session(config) as run:  # resumed: the rest of round 1, then round 2 simulated
        for r in (1, 2):
            run_round(run, r, dask_client, pairplot=False)
    store = RunStore.open(config.run_path)
    theta_1, x_1, valid = store.read_simulations(1)
    assert np.array_equal(theta_1, theta.astype(np.float32)) and valid.sum() == 79
    assert np.array_equal(x_1[valid], x[valid].astype(x_1.dtype))  # as the simulator returns
    assert store.round_info(2).num_simulations == 100 and store.stage(2) == Stage.DONE
    assert store.verify() == []
    with run_session(config) as run:  # finished: nothing done again, file not re-read
        (tmp_path / "bank.npz").unlink()
        assert all(s.skipped for s in run_round(run, 1, None, pairplot=False).stages.values())


def test_a_bank_changed_before_its_simulations_were_committed_is_refused(make_config, tmp_path):
    theta = np.random.default_rng(2).uniform(-2, 2, (40, 2))
    np.savez(tmp_path / "bank.npz", theta=theta, x=theta)
    config = make_config(**SMALL, start_from={"simulations": str(tmp_path / "bank.npz"),
                                             "drawn_from": "prior"})  # fmt: skip
    with run_session(config) as run:
        sample_proposal(run, 1)
    np.savez(tmp_path / "bank.npz", theta=theta, x=theta + 1)
    with run_session(config) as run, pytest.raises(ValueError, match="changed since round 1"):
        run_round(run, 1, None, pairplot=False)


def _bank(path, theta, x=None):
    with h5py.File(path, "w") as f:
        f["sims/theta"] = theta
        f["sims/x"] = theta if x is None else x
    return {"simulations": str(path), "theta": "sims/theta", "x": "sims/x"}


def test_origins_that_do_not_fit_the_method_are_refused(source_run, make_config, tmp_path):
    inside = np.random.default_rng(3).uniform(-2, 2, (20, 2))
    outside = inside.copy()
    outside[5] = [3.0, 0.0]
    cases = [
        ({**_bank(tmp_path / "a.h5", outside), "drawn_from": "prior"},
         "rows [5] lie outside the prior's support, so they are not prior draws"),
        (_bank(tmp_path / "b.h5", inside),
         "is not a run file, so it does not record where its parameters were drawn from"),
        ({"simulations": str(source_run.run_path), "round": 2},
         "was not drawn from the prior; snpe trains its first round with a loss"),
        ({"simulations": str(source_run.run_path), "round": 2, "drawn_from": "prior"},
         "round 2 of"),
        ({**_bank(tmp_path / "c.h5", inside, inside[:, :1]), "drawn_from": "prior"},
         "must have shapes (N, 2) and (N, 2)"),
        ({"simulations": str(tmp_path / "none.npz"), "drawn_from": "prior"},
         "is not an existing .npz or .h5 file"),
    ]  # fmt: skip
    for start, message in cases:
        with pytest.raises(ValueError, match=None) as caught:
            preflight(make_config(**SMALL, start_from=start))
        assert message in str(caught.value) and "\n" not in str(caught.value), start
    with pytest.raises(ValidationError, match="correct only for parameters drawn from the prior"):
        make_config(start_from={**_bank(tmp_path / "d.h5", inside), "drawn_from": "other"})
    # a likelihood's loss holds for any proposal: SNLE takes another run's posterior round
    snle = make_config(**SMALL, method="snle", start_from={"simulations": str(source_run.run_path),
                                                           "round": 2})  # fmt: skip
    preflight(snle)
