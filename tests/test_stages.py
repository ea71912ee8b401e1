"""The per-round stages without Prefect: commits, skips, resume, settings checks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from sbi_rounds import stages
from sbi_rounds.errors import LeakageWarning
from sbi_rounds.lifecycle.preflight import Preflight, preflight
from sbi_rounds.methods.leakage import percent
from sbi_rounds.report.results import load_posterior
from sbi_rounds.stages import (
    ConfigMismatchError,
    InvalidRoundError,
    RunInterrupted,
    open_run,
    run_session,
)
from sbi_rounds.store import RoundCounts, RunStore, Stage


def _round(run, r, client, **simulate_kwargs):
    results = [
        stages.sample_proposal(run, r),
        stages.simulate(run, r, client, **simulate_kwargs),
        stages.append_simulations(run, r),
        stages.train(run, r),
        stages.build_posterior(run, r),
        stages.checkpoint(run, r),
    ]
    return results


def test_a_round_commits_every_stage_and_a_rerun_skips_them(make_config, dask_client):
    config = make_config(rounds=1)
    with run_session(config) as run:
        first = _round(run, 1, dask_client)
        again = _round(run, 1, dask_client)
    assert [r.skipped for r in first] == [False] * 6
    assert [r.skipped for r in again] == [True] * 6
    store = RunStore.open(config.run_path)
    assert store.stage(1) == Stage.DONE
    assert store.counts(1) == RoundCounts(simulations=300, valid=300, invalid=0)
    assert store.read_samples(1).shape == (200, 2)
    assert (
        config.run_path.parent / "report" / "figures" / "round_001_pairplot.png"
    ).stat().st_size > 1000
    timings = store.timings(1).by_stage()
    assert all(timings[k] > 0 for k in ("sample", "simulate", "train", "posterior"))
    row = stages.round_table(store)[0]
    assert row.epochs == 15 and row.valid == 300


def test_an_interrupted_round_resumes_without_redoing_chunks_and_gives_the_same_answer(
    make_config, dask_client, tmp_path
):
    config = make_config(rounds=1)
    calls = {"n": 0}

    def stop_after_some_chunks():
        calls["n"] += 1
        return calls["n"] > 2

    with run_session(config) as run:
        stages.sample_proposal(run, 1)
        with pytest.raises(RunInterrupted):
            stages.simulate(run, 1, dask_client, should_stop=stop_after_some_chunks)
        pending = run.store.pending_chunks(1)
        assert 0 < len(pending) < 6 or len(pending) == 6  # stopped before finishing
        done_before = 6 - len(pending)
        result = stages.simulate(run, 1, dask_client)
        assert result.details.chunks_skipped == done_before
        assert result.details.chunks_run == len(pending)
        for fn in (stages.append_simulations, stages.train, stages.build_posterior):
            fn(run, 1)
    reference = make_config(rounds=1, run_dir=str(tmp_path / "reference"))
    with run_session(reference) as ref_run:
        _round(ref_run, 1, dask_client)
    a, b = RunStore.open(config.run_path), RunStore.open(reference.run_path)
    np.testing.assert_array_equal(a.read_simulations(1)[1], b.read_simulations(1)[1])
    wa, wb = a.read_network(1)[0], b.read_network(1)[0]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    np.testing.assert_array_equal(a.read_samples(1), b.read_samples(1))


def test_resuming_with_changed_identity_settings_is_refused_untouched(make_config):
    config = make_config()
    open_run(config)
    before = config.run_path.read_bytes()
    changed = make_config(
        xobs=[0.4, -0.3],
        run_id=config.resolved_run_id,
        network={"hidden_features": 30, "num_transforms": 2},
    )
    with pytest.raises(ConfigMismatchError) as info:
        open_run(changed)
    text = str(info.value)
    assert "xobs: [0.5, -0.3] -> [0.4, -0.3]" in text
    assert "network.hidden_features: 20 -> 30" in text
    assert "--run-id NEW_ID" in text and "--allow-change network --allow-change xobs" in text
    assert config.run_path.read_bytes() == before
    run = open_run(changed, allow_changes=["xobs", "network"])
    assert run.store.read_config()["xobs"] == [0.4, -0.3]


def test_safe_changes_are_accepted_and_recorded(make_config):
    config = make_config()
    open_run(config)
    more = make_config(rounds=5, training={"max_epochs": 3})
    assert more.resolved_run_id == config.resolved_run_id
    run = open_run(more)
    history = run.store.config_history()
    assert any("rounds: 2 -> 5" in c for c in history[-1]["changes"])


def test_the_preflight_probes_the_simulator_once_and_the_session_keeps_its_dtype(
    make_config, tmp_path, monkeypatch
):
    count = tmp_path / "count.txt"
    monkeypatch.setenv("SBI_ROUNDS_COUNT_FILE", str(count))
    config = make_config(simulator={"path": "simulators:counting"})
    checked = preflight(config)
    assert count.read_text().split() == ["2"] and checked.simulated_dtype == "<f4"
    run = open_run(config, preflight=checked)  # the command line hands it to the flow
    assert count.read_text().split() == ["2"]  # not probed again
    assert run.store._known_x_dtype(1) == np.dtype("<f4")
    assert preflight(config) == Preflight(str(config.run_path))  # an existing run: no probe
    assert count.read_text().split() == ["2"]
    other = make_config(simulator={"path": "simulators:counting"}, run_id="other")
    open_run(other, preflight=checked)  # another run's result: the session probes its own
    assert count.read_text().split() == ["2", "2"]


@pytest.mark.parametrize(
    ("simulator", "message"),
    [
        ("simulators:wrong_shape", r"returned shape \(2, 3\).*xobs has 2 values"),
        ("simulators:returns_strings", "must return real numbers"),
        ("simulators:does_not_exist", "has no attribute 'does_not_exist'"),
        ("no_such_module:f", "failed to import"),
    ],
)
def test_bad_simulators_fail_early_and_leave_no_run_file(make_config, simulator, message):
    config = make_config(simulator={"path": simulator})
    with pytest.raises(ValueError, match=message):
        open_run(config)
    assert not config.run_path.exists()


def test_a_round_with_too_few_valid_simulations_stops_and_keeps_them(make_config, dask_client):
    config = make_config(rounds=1, simulator={"path": "simulators:mostly_nan"})
    with run_session(config) as run:
        stages.sample_proposal(run, 1)
        stages.simulate(run, 1, dask_client)
        with pytest.raises(InvalidRoundError, match=r"only \d+ of 300 simulations .* valid"):
            stages.append_simulations(run, 1)
        _, x, valid = run.store.read_simulations(1)
        assert np.isnan(x[~valid]).all() and (~valid).sum() > 150
    # Lowering the threshold (a safe change) continues the same run.
    relaxed = make_config(
        rounds=1,
        simulator={"path": "simulators:mostly_nan"},
        cluster={"chunk_size": 50, "min_valid_fraction": 0.0},
    )
    with run_session(relaxed) as run:
        assert stages.simulate(run, 1, dask_client).skipped
        result = stages.append_simulations(run, 1)
        assert 0 < result.details.valid < 150


def test_invalid_rows_are_excluded_from_training(make_config, dask_client):
    config = make_config(rounds=1, simulator={"path": "simulators:some_nan"})
    with run_session(config) as run:
        stages.sample_proposal(run, 1)
        stages.simulate(run, 1, dask_client)
        counts = stages.append_simulations(run, 1).details
        assert counts.valid < 300
        stages.train(run, 1)
        assert run.store.training_summary(1).training_samples == counts.valid


def test_load_posterior_gives_an_sbi_posterior_of_any_round(make_config, dask_client):
    config = make_config(rounds=2)
    with run_session(config) as run:
        for r in (1, 2):
            _round(run, r, dask_client)
        assert run.store.round_info(2).proposal == {"kind": "posterior", "round": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error", LeakageWarning)  # neither round leaks: no warning
        posterior = load_posterior(config.run_path, round=-1)
        first = load_posterior(config.run_path.parent, round=1)
    samples = posterior.sample((50,), show_progress_bars=False)
    assert samples.shape == (50, 2)
    assert posterior.log_prob(samples).shape == (50,)
    assert posterior.map(num_iter=5, num_init_samples=20).shape == (1, 2)
    assert first.sample((5,), show_progress_bars=False).shape == (5, 2)
    with pytest.raises(ValueError, match="trained rounds"):
        load_posterior(config.run_path, round=3)


def test_loading_a_leaking_posterior_warns_how_slow_it_samples_and_how_to_bound_it(
    make_config, dask_client
):
    """A round whose run measured less than 10% of its posterior inside the prior is
    loaded with a warning: the cost of 10,000 samples, sbi's time bound, and the last
    earlier round that does not leak."""
    from sbi_rounds.store import PriorMass

    config = make_config(rounds=2)
    with run_session(config) as run:
        for r in (1, 2):
            _round(run, r, dask_client)
        healthy = run.store.prior_mass(1)
        leaky = PriorMass(fraction=0.0003, draws=100_000, seconds_per_draw=2e-4)
        run.store.write_prior_mass(2, leaky)
    with pytest.warns(LeakageWarning) as caught:
        posterior = load_posterior(config.run_path)
    (message,) = [str(w.message) for w in caught if w.category is LeakageWarning]
    assert message.startswith(
        "round 2's posterior at xobs puts 0.03% of its mass inside the prior "
        "(30 of 100000 network draws)"
    ), message
    assert "sample((10000,)) takes about 1 h 51 min" in message  # 10000 / 3e-4 * 2e-4 s
    assert "max_sampling_time=SECONDS, return_partial_on_timeout=True" in message
    assert f"or load round=1 ({percent(healthy.fraction)} inside)" in message
    assert caught[0].filename == __file__  # points at the caller's line
    theta = posterior.sample(
        (5,), max_sampling_time=0.5, return_partial_on_timeout=True, show_progress_bars=False
    )
    assert theta.shape[1] == 2  # the advice works: sbi returns what it drew in time


def test_mcmc_sampling_resumes_from_its_last_committed_batch(make_config, dask_client):
    config = make_config(
        method="snle",
        rounds=2,
        training={"max_epochs": 3},
        posterior={"num_samples": 40, "batches": 2, "num_chains": 4, "warmup_steps": 5},
    )
    with run_session(config) as run:
        _round(run, 1, dask_client)
        stages.sample_proposal(run, 2)
        stages.simulate(run, 2, dask_client)
        stages.append_simulations(run, 2)
        stages.train(run, 2)
        # An interrupted posterior stage: its first batch is committed, the second is not.
        sentinel = np.full((20, 2), 7.0, dtype=np.float32)
        run.store.write_samples(2, 0, sentinel)
        assert run.store.round_info(2).samples_done == 20
        stages.build_posterior(run, 2)
        samples = run.store.read_samples(2)
    assert samples.shape == (40, 2)
    np.testing.assert_array_equal(samples[:20], sentinel)  # kept, not redrawn
    assert np.abs(samples[20:]).max() < 7.0 and np.isfinite(samples[20:]).all()
    # Round 2's parameters started with round 1's stored posterior samples.
    theta2 = run.store.read_theta(2)
    np.testing.assert_array_equal(theta2[:40], run.store.read_samples(1))


def test_the_posterior_stage_records_its_mass_in_the_prior_and_stops_past_the_time_limit(
    make_config, dask_client
):
    """The fraction of the flow's draws inside the prior is recorded before sampling; a
    sampling predicted above ``posterior.max_sampling_seconds`` stops the round with its
    training kept, and resuming with a higher limit finishes it. A recorded fraction below
    10% is a warning and shows in the round table."""
    from sbi_rounds.diagnostics import round_alerts
    from sbi_rounds.errors import LeakageError
    from sbi_rounds.report.table import format_round_table, round_table
    from sbi_rounds.store import PriorMass

    config = make_config(rounds=1, run_id="leak", posterior={"max_sampling_seconds": 1e-6})
    with run_session(config) as run:
        with pytest.raises(LeakageError, match="more than posterior.max_sampling_seconds=1e-06"):
            _round(run, 1, dask_client)
        mass = run.store.prior_mass(1)
        assert run.store.stage(1) == Stage.TRAINED
        assert 0.1 < mass.fraction <= 1 and mass.draws == 10_000
        assert round_table(run.store)[0].in_prior == pytest.approx(100 * mass.fraction)
        assert not any("inside the prior" in a for a in round_alerts(run, 1))

    config = make_config(rounds=1, run_id="leak", posterior={"max_sampling_seconds": 600})
    with run_session(config) as run:
        results = _round(run, 1, dask_client)
        again = run.store.prior_mass(1)  # measured again: the same seed, the same count
        assert (again.fraction, again.draws) == (mass.fraction, mass.draws)
        run.store.write_prior_mass(1, PriorMass(fraction=0.003, draws=10_000, seconds_per_draw=0))
        alerts = round_alerts(run, 1)
        table = format_round_table(round_table(run.store))
    assert [r.skipped for r in results] == [True] * 4 + [False] * 2
    assert any(
        a.startswith("round 1: only 0.3% of the posterior estimate at xobs lies inside the prior")
        and "Check xobs and the prior" in a
        for a in alerts
    ), alerts
    assert "in prior" in table.splitlines()[0] and " 0.3% " in table


def test_a_proposal_from_a_leaking_posterior_is_refused_before_it_is_drawn(
    make_config, dask_client
):
    from sbi_rounds.errors import LeakageError
    from sbi_rounds.store import PriorMass

    config = make_config(rounds=2)
    with run_session(config) as run:
        _round(run, 1, dask_client)
        assert run.store.prior_mass(1) is not None
        leaky = PriorMass(fraction=1e-9, draws=10_000, seconds_per_draw=1e-5)
        run.store.write_prior_mass(1, leaky)
        with pytest.raises(LeakageError, match="drawing 100 samples for round 2's proposal"):
            stages.sample_proposal(run, 2)
        assert run.store.round_info(2).theta_done == 200  # round 1's samples, reused


@pytest.mark.parametrize(
    "method, settings",
    [
        ("tsnpe", {}),
        # the region bounded by the posterior's own log-probability (an ODE solve per draw)
        (
            "tfmpe",
            {
                "network": {"model": None, "num_transforms": 5},
                "tfmpe": {"num_samples_to_estimate": 500},
                "posterior": {"num_samples": 100},
            },
        ),
    ],
)
def test_a_truncated_prior_too_small_to_sample_in_time_is_refused_with_its_share(
    make_config, dask_client, method, settings
):
    from sbi_rounds.errors import LeakageError

    config = make_config(method=method, rounds=2, run_id="t", **settings)
    with run_session(config) as run:
        _round(run, 1, dask_client)
    strict = make_config(
        method=method,
        rounds=2,
        run_id="t",
        **{
            **settings,
            "posterior": {**settings.get("posterior", {}), "max_sampling_seconds": 1e-6},
        },
    )
    with run_session(strict) as run:
        with pytest.raises(LeakageError, match="the prior truncated to round 1's posterior"):
            stages.sample_proposal(run, 2)
        proposal = run.store.round_info(2).proposal
        assert run.store.round_info(2).theta_done == 0
    assert proposal["kind"] == "truncated_prior" and 0 < proposal["kept"] <= 1


def test_drawing_from_a_truncated_prior_prints_nothing(capsys):
    """sbi's ``RestrictedPrior`` prints its rejected fraction on every draw unless told not
    to: a line on the run's console that is not the project's."""
    from sbi.utils import BoxUniform

    from sbi_rounds.methods import truncated_prior
    from sbi_rounds.stages.sampling import draw

    prior = BoxUniform(torch.zeros(2), torch.ones(2))
    density = torch.distributions.MultivariateNormal(torch.full((2,), 0.5), 0.01 * torch.eye(2))
    theta = draw(truncated_prior(prior, density, -2.0), 50)
    assert theta.shape == (50, 2) and (density.log_prob(theta) > -2.0).all()
    assert capsys.readouterr().out == ""


def _fresh_in_round_2(config, client):
    with run_session(config) as run:
        for r in (1, 2):
            _round(run, r, client)
    store = RunStore.open(config.run_path)
    (attempt,) = store.training_attempts(2)
    return attempt.fresh, store.read_network(2)[0]


def test_tsnpe_trains_afresh_once_a_round_has_2000_simulations_as_retrain_true_does(
    make_config, dask_client, tmp_path
):
    """``retrain_from_scratch: auto``: TSNPE's round 2 continues at 2 x 300 simulations and
    starts afresh at 2 x 1000, with the very weights ``retrain_from_scratch: true`` gives
    (the 10k benchmark cells of benchmarks/README.md rest on that)."""
    settings = {"method": "tsnpe", "training": {"max_epochs": 3}}
    small, _ = _fresh_in_round_2(make_config(**settings, run_dir=str(tmp_path / "a")), dask_client)
    auto, auto_weights = _fresh_in_round_2(
        make_config(**settings, simulations_per_round=1000, run_dir=str(tmp_path / "b")),
        dask_client,
    )
    scratch = {**settings, "training": {"max_epochs": 3, "retrain_from_scratch": True}}
    forced, forced_weights = _fresh_in_round_2(
        make_config(**scratch, simulations_per_round=1000, run_dir=str(tmp_path / "c")),
        dask_client,
    )
    assert (small, auto, forced) == (False, True, True)
    assert auto_weights.keys() == forced_weights.keys()
    assert all(torch.equal(auto_weights[k], forced_weights[k]) for k in auto_weights)
