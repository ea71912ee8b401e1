"""Posterior checks: the numbers, the figures, and the per-round stage on a real Dask cluster."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from sbi_rounds.config import RunConfig
from sbi_rounds.diagnostics import (
    COVERAGE_LEVELS,
    c2st_sbibm,
    check_inputs,
    check_metrics,
    checks_due,
    coverage_curve,
    describe_checks,
    diagnose,
    format_checks,
    movement,
    posterior_statistics,
    predictive_check,
    save_predictive_plot,
    stop_decision,
    stop_decision_for,
)
from sbi_rounds.diagnostics import stage as check_stage
from sbi_rounds.lifecycle.run import posterior_for_round
from sbi_rounds.report.document import render_report
from sbi_rounds.stages import RunInterrupted, run_session
from sbi_rounds.stages.round import run_round
from sbi_rounds.store import RunStore
from sbi_rounds.store.schema import Movement

XOBS = [0.5, -0.3]


def _small(tmp, **diagnostics):
    return RunConfig(
        xobs=XOBS,
        rounds=2,
        simulations_per_round=200,
        run_dir=str(tmp / "runs"),
        training={"max_epochs": 8, "batch_size": 100, "checkpoint_every": 0},
        network={"hidden_features": 20, "num_transforms": 2},
        posterior={"num_samples": 200},
        logger={"backend": "none"},
        cluster={"chunk_size": 50},
        diagnostics=diagnostics,
    )


def _finish_round(run, r, client):
    run_round(run, r, client)


# --- the numbers ------------------------------------------------------------------------
def test_posterior_statistics_give_moments_quantiles_map_and_the_truth():
    samples = np.random.default_rng(0).normal([1.0, -2.0], [0.5, 2.0], size=(20_000, 2))
    stats = posterior_statistics(
        samples, ["a", "b"], map_estimate=np.array([1.1, -1.9]), true_parameters=[1.0, 2.0]
    )
    a, b = stats["a"], stats["b"]
    assert a["mean"] == pytest.approx(1.0, abs=0.02) and a["std"] == pytest.approx(0.5, rel=0.03)
    assert a["q05"] == pytest.approx(1.0 - 1.645 * 0.5, abs=0.03)
    assert a["q25"] < a["median"] < a["q75"] < a["q95"]
    assert a["map"] == pytest.approx(1.1) and b["map"] == pytest.approx(-1.9)
    assert a["truth_quantile"] == pytest.approx(0.5, abs=0.02)
    assert b["truth_quantile"] == pytest.approx(0.977, abs=0.01)  # 2 sd above the mean
    with pytest.raises(ValueError, match=r"shape \(S >= 2, 2\)"):
        posterior_statistics(samples[:, :1], ["a", "b"])


@pytest.mark.parametrize(
    ("xobs", "flagged", "quantiles"),
    [
        ([0.0, 0.0], [], (0.5, 0.5)),  # x_o at the predictive medians
        ([1.0, -1.0], [], (0.84, 0.16)),  # one sd out: inside the 99% interval
        ([4.0, 0.0], ["s1"], (1.0, 0.5)),  # beyond every predictive simulation
        ([0.0, -3.2], ["s2"], (0.5, 0.001)),  # 3.2 sd below: p = 0.0014 < 0.01
    ],
)
def test_the_predictive_check_flags_statistics_outside_the_central_interval(
    xobs, flagged, quantiles
):
    x = np.random.default_rng(1).standard_normal((4000, 2))
    x[:5] = np.nan  # invalid simulations are left out
    check = predictive_check(x, np.array(xobs), ["s1", "s2"], alpha=0.01)
    assert check["simulations"] == 4000 and check["valid"] == 3995
    assert check["flagged"] == flagged
    for name, q in zip(("s1", "s2"), quantiles, strict=True):
        s = check["statistics"][name]
        assert s["quantile"] == pytest.approx(q, abs=0.02)
        assert s["p_value"] == pytest.approx(2 * min(s["quantile"], 1 - s["quantile"]))
        assert s["z"] == pytest.approx((xobs[name == "s2"] - s["mean"]) / s["std"])
        assert s["flagged"] == (name in flagged)
    assert check["joint"]["flagged"] == bool(flagged)


def test_movement_and_the_stopping_rule():
    r1 = {"a": {"mean": 0.0, "std": 1.0}, "b": {"mean": 5.0, "std": 2.0}}
    r2 = {"a": {"mean": 0.5, "std": 0.5}, "b": {"mean": 5.2, "std": 2.1}}
    r3 = {"a": {"mean": 0.52, "std": 0.51}, "b": {"mean": 5.2, "std": 2.0}}
    m2, m3 = movement(r1, r2), movement(r2, r3)
    assert m2["parameters"]["a"] == {"mean_shift": 0.5, "width_ratio": 0.5}
    assert m2["parameters"]["b"]["mean_shift"] == pytest.approx(0.1)
    assert m2["max_mean_shift"] == 0.5 and m2["max_width_change"] == 0.5
    assert m3["max_mean_shift"] == pytest.approx(0.04) and m3["max_width_change"] < 0.05
    m2, m3 = Movement.model_validate(m2), Movement.model_validate(m3)  # as stored
    rule = {"mean_shift": 0.1, "width_change": 0.1}
    assert not stop_decision([None, m2], rounds=1, **rule).stop
    decision = stop_decision([None, m2, m3], rounds=1, **rule)
    assert decision.stop and decision.stable_rounds == 1
    assert "stable for 1 round(s) in a row" in decision.reason
    assert not stop_decision([None, m2, m3], rounds=2, **rule).stop
    assert stop_decision([None, m3, m3], rounds=2, **rule).stop
    assert not stop_decision([None], rounds=1, **rule).stop


def test_c2st_as_sbibm_tells_shifted_samples_apart_and_equal_ones_not():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(400, 2))
    same = c2st_sbibm(reference, rng.normal(size=(300, 2)))
    shifted = c2st_sbibm(reference, rng.normal(3.0, 1.0, size=(300, 2)))
    assert same["samples"] == 300 and abs(same["accuracy"] - 0.5) < 0.1
    assert shifted["accuracy"] > 0.95


def test_coverage_curve_of_uniform_ranks_is_the_diagonal():
    ranks = np.random.default_rng(3).integers(0, 1000, size=20_000)
    curve = coverage_curve(ranks, 1000)
    assert len(curve) == len(COVERAGE_LEVELS) == 21
    np.testing.assert_allclose(curve, COVERAGE_LEVELS, atol=0.015)


def test_a_predictive_figure_draws_flagged_statistics(tmp_path):
    x = np.random.default_rng(4).standard_normal((300, 3))
    check = predictive_check(x, np.array([0.0, 9.0, 0.1]), ["a", "b", "c"], alpha=0.01)
    path = save_predictive_plot(x, np.array([0.0, 9.0, 0.1]), check, tmp_path / "p.png")
    assert check["flagged"] == ["b"] and path.read_bytes()[:4] == b"\x89PNG"


def test_diagnostics_settings_are_validated_and_name_the_field(tmp_path):
    with pytest.raises(ValidationError, match="true_parameters has 3 values"):
        _small(tmp_path, true_parameters=[1, 2, 3])
    with pytest.raises(ValidationError, match="diagnostics.predictive_simulations"):
        _small(tmp_path, predictive_simulations=-1)
    with pytest.raises(ValidationError, match="stop_when_stabel"):
        _small(tmp_path, stop_when_stabel=True)
    config = _small(tmp_path, reference=str(tmp_path / "missing.npy"))
    assert config.fingerprint() == _small(tmp_path).fingerprint()  # not an identity setting
    np.save(tmp_path / "wrong.npy", np.zeros((50, 3)))
    with run_session(config) as run:
        with pytest.raises(ValueError, match="is neither a list of numbers nor an existing"):
            check_inputs(run)
    with run_session(_small(tmp_path, reference=str(tmp_path / "wrong.npy"))) as run:
        with pytest.raises(ValueError, match=r"shape \(S, 2\); it has shape \(50, 3\)"):
            check_inputs(run)


# --- the stage on a real cluster ----------------------------------------------------------
@pytest.fixture(scope="module")
def checked_run(tmp_path_factory, dask_client):
    """Two rounds of the linear Gaussian model with every check on, diagnosed once."""
    tmp = tmp_path_factory.mktemp("checked")
    reference = np.random.default_rng(5).normal(XOBS, 0.1, size=(500, 2))
    np.save(tmp / "reference.npy", reference)
    config = _small(
        tmp,
        predictive_simulations=100,
        map_iterations=30,
        calibration_simulations=40,
        calibration_posterior_samples=100,
        reference=str(tmp / "reference.npy"),
        true_parameters=[0.5, -0.3],
        stop_when_stable=True,
        stable_mean_shift=100.0,
        stable_width_change=100.0,
        stable_rounds=1,
    )
    results = {}
    with run_session(config) as run:
        for r in (1, 2):
            _finish_round(run, r, dask_client)
            assert checks_due(run, r)
            results[r] = diagnose(run, r, lambda: dask_client)
        again = [diagnose(run, r, None) for r in (1, 2)]
    return config, results, again


def test_every_check_is_committed_to_the_run_file(checked_run):
    config, results, _ = checked_run
    assert results[1].details.parts == ("posterior", "map", "predictive", "c2st", "calibration")
    assert results[2].details.parts == ("posterior", "map", "predictive", "movement", "c2st")
    store = RunStore.open(config.run_path)
    for r in (1, 2):
        diag = store.diagnostics(r)
        post = diag.posterior
        assert set(post) == {"theta_1", "theta_2"}
        for name, truth in zip(post, (0.5, -0.3), strict=True):
            s = post[name]
            assert s.q05 < s.median < s.q95 and s.std > 0
            assert -2 <= s.map <= 2 and s.truth == truth
        assert [post[n].map for n in post] == diag.map
        samples = store.read_samples(r)
        assert post["theta_1"].mean == pytest.approx(float(samples[:, 0].mean()))
        check = diag.predictive
        assert check.simulations == check.valid == 100
        assert set(check.statistics) == {"x_1", "x_2"}
        assert (config.run_path.parent / check.figure).read_bytes()[:4] == b"\x89PNG"
        assert diag.c2st.samples == 200 and 0.4 <= diag.c2st.accuracy <= 1.0
        assert None not in (diag.seconds.map, diag.seconds.predictive, diag.seconds.c2st)
    move = store.diagnostics(2).movement
    s1 = store.diagnostics(1).posterior["theta_1"]
    s2 = store.diagnostics(2).posterior["theta_1"]
    assert move.parameters["theta_1"].mean_shift == pytest.approx((s2.mean - s1.mean) / s1.std)
    assert move.parameters["theta_1"].width_ratio == pytest.approx(s2.std / s1.std)


def test_round_one_is_calibrated_with_sbc_ranks_and_expected_coverage(checked_run):
    config, _, _ = checked_run
    cal = RunStore.open(config.run_path).calibration(1)
    assert cal.test_simulations == cal.valid == 40 and cal.posterior_samples == 100
    for p in cal.parameters.values():
        assert 0 <= p.ks_p_value <= 1
        assert p.c2st_ranks is None and p.c2st_dap is None  # classifier tests off by default
        assert sum(p.rank_histogram) == 40
    cov = cal.coverage
    assert cov.levels == list(COVERAGE_LEVELS) and cov.values[-1] == 1.0
    assert all(a <= b for a, b in zip(cov.values, cov.values[1:], strict=False))
    assert "amortized" in cal.estimator and "round 1" in cal.note
    assert set(cal.figures) == {"ranks", "coverage"}
    for name in cal.figures.values():
        assert (config.run_path.parent / name).stat().st_size > 1000
    assert RunStore.open(config.run_path).calibration(2) is None


def test_checks_are_skipped_once_committed_and_the_stopping_rule_reads_them(checked_run):
    config, _, again = checked_run
    assert [r.skipped for r in again] == [True, True]  # no client needed to skip
    assert (config.run_path.parent / "checks" / "diagnostics.h5").is_file()
    with run_session(config) as run:
        assert checks_due(run, 1) == checks_due(run, 2) == []
        assert not stop_decision_for(run, 1).stop
        decision = stop_decision_for(run, 2)
        assert decision.stop and decision.stable_rounds == 1
        table = format_checks(run)
        line, metrics = describe_checks(run, 2), check_metrics(run, 2)
    assert table.splitlines()[0].split()[0] == "round" and len(table.splitlines()) == 3
    assert "predictive check: no statistic flagged" in line and "C2ST against" in line
    assert set(metrics) == {
        "round/predictive_flagged",
        "round/max_mean_shift",
        "round/max_width_change",
        "round/c2st",
    }
    # A check switched on later is filled in; the committed ones are kept.
    more = config.model_copy(
        update={
            "diagnostics": config.diagnostics.model_copy(
                update={"map_iterations": 0, "true_parameters": None}
            )
        }
    )
    with run_session(more) as run:
        assert checks_due(run, 1) == ["posterior"]
        before = run.store.diagnostics(1)
        assert not diagnose(run, 1, None).skipped
        after = run.store.diagnostics(1)
    assert after.predictive == before.predictive
    assert all(s.truth is None for s in after.posterior.values())
    assert all(s.truth is not None for s in before.posterior.values())


def test_the_classifier_tests_of_calibration_switched_on_later_are_filled_in(
    checked_run, dask_client
):
    config, _, _ = checked_run
    before = RunStore.open(config.run_path).calibration(1)
    with run_session(config) as run:
        plain = render_report(run)
    assert "KS p-value (ranks uniform)" in plain and "C2ST ranks" not in plain
    assert "C2ST near 0.5" not in plain  # the reading guide names only what is shown
    more = config.model_copy(
        update={
            "diagnostics": config.diagnostics.model_copy(update={"calibration_classifiers": True})
        }
    )
    with run_session(more) as run:
        assert "calibration" in checks_due(run, 1) and "calibration" not in checks_due(run, 2)
        result = diagnose(run, 1, lambda: dask_client)
        assert result.details.parts[-1] == "calibration"
        assert "calibration" not in checks_due(run, 1)
        report = render_report(run)
    after = RunStore.open(config.run_path).calibration(1)
    for name, p in after.parameters.items():
        assert 0.0 <= p.c2st_ranks <= 1.0 and 0.0 <= p.c2st_dap <= 1.0
        # The same seeded ranks: the KS tests are unchanged.
        assert p.ks_p_value == before.parameters[name].ks_p_value
        assert p.rank_histogram == before.parameters[name].rank_histogram
    assert any("100s" in w for w in after.warnings)  # sbi's own advice on small checks
    assert "C2ST ranks vs uniform" in report and "C2ST near 0.5" in report


def test_the_map_ascent_stops_once_a_stretch_gains_nothing_and_climbs_on_while_it_gains(
    checked_run, monkeypatch
):
    config, _, _ = checked_run
    more = config.model_copy(
        update={"diagnostics": config.diagnostics.model_copy(update={"map_iterations": 400})}
    )
    with run_session(more) as run:
        posterior = posterior_for_round(run, 2)
        real_map, stretches = posterior.map, []

        def counted(**kwargs):
            stretches.append(kwargs["num_iter"])
            return real_map(**kwargs)

        monkeypatch.setattr(posterior, "map", counted)
        monkeypatch.setattr(check_stage, "posterior_for_round", lambda run, round_: posterior)
        samples = run.store.read_samples(2)
        near = check_stage._map(run, 2, samples)
        near_stretches, stretches[:] = list(stretches), []
        # Started from samples moved 3 posterior sd away, the ascent needs more stretches.
        moved = np.clip(samples + 3 * samples.std(axis=0), -1.99, 1.99)
        far = check_stage._map(run, 2, moved)
        far_stretches = list(stretches)
        full = real_map(
            init_method=torch.as_tensor(samples[:1000], dtype=torch.float32),
            num_iter=400,
            num_to_optimize=10,
            show_progress_bars=False,
            force_update=True,
        )
    potential = posterior.potential
    assert near_stretches == [25, 25]  # the best sample is at the mode: one stretch to see it
    assert len(far_stretches) > 2 and sum(far_stretches) <= 400, far_stretches
    for estimate in (near, far):
        value = float(potential(torch.tensor([estimate], dtype=torch.float32)))
        assert value >= float(potential(full)) - 0.01


def test_a_statistic_the_model_cannot_produce_is_flagged_and_an_interrupted_check_resumes(
    tmp_path, dask_client
):
    # x = theta^2 + noise cannot be -2: x_1 is flagged, x_2 = 0.5 is reproduced.
    config = RunConfig.model_validate(
        {
            **_small(tmp_path, predictive_simulations=200, map_iterations=0).model_dump(),
            "xobs": [-2.0, 0.5],
            "rounds": 1,
            "simulator": {"path": "sbi_rounds.examples:quadratic"},
        }
    )
    polls = {"n": 0}

    def stop_soon():
        polls["n"] += 1
        return polls["n"] > 1

    with run_session(config) as run:
        _finish_round(run, 1, dask_client)
        with pytest.raises(RunInterrupted, match="predictive check of round 1"):
            diagnose(run, 1, dask_client, should_stop=stop_soon)
        assert run.store.diagnostics(1) is None  # nothing half-committed
        side = RunStore.open(config.run_path.parent / "checks" / "diagnostics.h5")
        committed = 200 - sum(50 for _ in side.pending_chunks(1))
        diagnose(run, 1, dask_client)
        check = run.store.diagnostics(1).predictive
    assert check.simulated_now == 200 - committed
    assert check.flagged == ["x_1"]
    assert check.statistics["x_1"].quantile == 0.0 and check.statistics["x_1"].z < -2
    assert not check.statistics["x_2"].flagged
    # The same simulations as an uninterrupted check: seeds are per chunk.
    fresh = config.model_copy(update={"run_dir": str(tmp_path / "fresh")})
    with run_session(fresh) as run:
        _finish_round(run, 1, dask_client)
        diagnose(run, 1, dask_client)
    a = RunStore.open(config.run_path.parent / "checks" / "diagnostics.h5").read_simulations(1)[1]
    b = RunStore.open(fresh.run_path.parent / "checks" / "diagnostics.h5").read_simulations(1)[1]
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tsnpe", "snle", "snre"])
def test_round_one_calibration_runs_for_every_method(tmp_path, dask_client, method):
    config = RunConfig.model_validate(
        {
            **_small(
                tmp_path,
                predictive_simulations=50,
                calibration_simulations=12,
                calibration_posterior_samples=20,
                map_iterations=20,
            ).model_dump(),
            "method": method,
            "rounds": 1,
            "posterior": {"num_samples": 50, "num_chains": 4, "warmup_steps": 10},
        }
    )
    with run_session(config) as run:
        _finish_round(run, 1, dask_client)
        diagnose(run, 1, dask_client)
        cal = run.store.calibration(1)
        diag = run.store.diagnostics(1)
    assert cal.valid == 12 and f"({method})" in cal.estimator
    assert all(0 <= p.ks_p_value <= 1 for p in cal.parameters.values())
    assert diag.predictive.valid == 50
    assert all(math.isfinite(v) for v in diag.map)
