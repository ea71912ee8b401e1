"""Warnings about a finished round, and the round table's line and columns, on real runs."""

from __future__ import annotations

from example_records import training_summary

from sbi_rounds.diagnostics import diagnose, round_alerts, simulation_alerts, stop_label
from sbi_rounds.lifecycle.session import run_session
from sbi_rounds.report.table import (
    ROUND_COLUMNS,
    RoundRow,
    format_round_table,
    round_line,
    round_table,
)
from sbi_rounds.stages.round import run_round
from sbi_rounds.store import RunStore


def test_a_capped_training_that_still_improves_is_named_with_the_way_out(make_config, dask_client):
    config = make_config(rounds=1, training={"max_epochs": 3})
    with run_session(config) as run:
        run_round(run, 1, dask_client, pairplot=False)
        alerts = round_alerts(run, 1)
        row = round_table(run.store)[0]
    assert any(
        a.startswith(
            "round 1: training stopped at its cap (reached max_epochs=3) while the "
            "validation loss was still improving (best at epoch 3 of 3)"
        )
        and "raise training.max_epochs" in a
        for a in alerts
    ), alerts
    assert row.stop == "max_epochs"
    line = round_line(row, 1)
    assert line.startswith(
        "round 1/1 done: 300 simulations (300 valid), 3 epochs (stopped by "
        "max_epochs), best validation loss "
    )
    assert "; seconds: simulate " in line and ", train " in line


def test_a_posterior_as_wide_as_the_prior_and_failed_simulations_are_named(
    make_config, dask_client
):
    config = make_config(
        rounds=1,
        simulator={"path": "simulators:ignores_theta"},
        training={"max_epochs": None, "patience": 5},
    )
    with run_session(config) as run:
        run_round(run, 1, dask_client, pairplot=False)
        alerts = round_alerts(run, 1)
    assert any("about as wide as the prior" in a for a in alerts), alerts
    assert not any("cap" in a for a in alerts)

    config = make_config(rounds=1, simulator={"path": "simulators:some_nan"}, run_id="nan")
    with run_session(config) as run:
        run_round(run, 1, dask_client, pairplot=False)
        alerts = round_alerts(run, 1)
        counts = run.store.counts(1)
    failed = counts.simulations - counts.valid
    assert failed > 0
    assert f"round 1: {failed} of 300 simulations failed" in " ".join(alerts)


def test_stop_labels_and_the_shared_round_columns():
    assert stop_label(None) is None
    timed_out = training_summary(limit_reached="max_time", stop_reason="reached max_time=5 s")
    assert stop_label(timed_out) == "max_time"
    patience = "validation loss did not improve by more than 0.0 for 20 epochs"
    assert stop_label(training_summary(limit_reached=None, stop_reason=patience)) == "patience"
    lr = "learning rate fell below min_lr"
    assert stop_label(training_summary(limit_reached=None, stop_reason=lr)) == "min_lr"
    keys = [c.key for c in ROUND_COLUMNS]
    assert keys == list(RoundRow.model_fields)  # a column per field, in the same order
    row = RoundRow(round=1, stage="done", simulations=10, valid=9, stop="patience")
    text = format_round_table([row])
    assert text.splitlines()[0].split()[:4] == ["round", "sims", "valid", "network"]
    assert "patience" in text.splitlines()[1]


def test_a_valid_fraction_that_fell_is_named(tmp_path):
    store = RunStore.create(tmp_path / "run.h5", config={"a": 1}, fingerprint="abc")
    for r in (1, 2, 3, 4, 5):
        store.plan_round(
            r,
            num_simulations=100,
            theta_dim=2,
            x_dim=2,
            chunk_size=50,
            num_posterior_samples=5,
            proposal={"kind": "prior"},
        )
    store.set_counts(1, 100, 99)
    store.set_counts(2, 100, 70)
    store.set_counts(3, 100, 68)
    assert simulation_alerts(store, 1) == [
        "round 1: 1 of 100 simulations failed (non-finite output or an error); they are left "
        "out of training"
    ]
    second = simulation_alerts(store, 2)
    assert len(second) == 2 and second[1].startswith(
        "round 2: 70% of the simulations were valid, down from 99% in round 1"
    )
    assert len(simulation_alerts(store, 3)) == 1  # 70% -> 68% is not a fall worth a warning
    assert simulation_alerts(store, 4) == []  # not counted yet
    store.set_counts(5, 100, 60)
    assert len(simulation_alerts(store, 5)) == 1  # no fall from round 4, which has no counts


def test_the_in_prior_column_shows_only_where_a_round_measured_it():
    row = RoundRow(round=1, stage="done", simulations=10, valid=10)
    assert "in prior" not in format_round_table([row])  # SNLE, SNRE, TFMPE, TNPSE
    text = format_round_table(
        [
            row,
            row.model_copy(update={"round": 2, "in_prior": 0.0312}),
            row.model_copy(update={"in_prior": 55.0}),
        ]
    )
    assert "in prior" in text.splitlines()[0]
    assert [line.split()[8] for line in text.splitlines()[1:]] == ["-", "0.031%", "55%"]


def test_a_miscalibrated_estimator_is_named_with_what_to_try(make_config, dask_client):
    # 40 simulations and 300 epochs at a fixed cap: far from calibrated (a posterior that is
    # the prior would pass, as the prior is calibrated: "as wide as the prior" catches that)
    config = make_config(
        rounds=1,
        simulations_per_round=40,
        training={"max_epochs": 300, "patience": None, "batch_size": 10},
        diagnostics={"calibration_simulations": 200, "calibration_posterior_samples": 100},
    )
    with run_session(config) as run:
        run_round(run, 1, dask_client, pairplot=False)
        diagnose(run, 1, dask_client)
        alerts = round_alerts(run, 1)
        calibration = run.store.calibration(1)
    assert calibration.tarp is not None  # TARP ran beside the ranks
    at90 = dict(zip(calibration.coverage.levels, calibration.coverage.values, strict=True))[0.9]
    (alert,) = [a for a in alerts if "miscalibrated" in a]
    assert alert.startswith("round 1: the posterior estimator is miscalibrated on 200 prior tests")
    assert f"expected coverage {at90:.2f} at 90%, outside 0.85-0.95" in alert
    way = "too narrow (overconfident)" if at90 < 0.9 else "too wide (underconfident)"
    assert way in alert and "training.patience" in alert


def test_calibration_and_width_alerts_follow_their_thresholds(make_config, dask_client):
    from sbi_rounds.diagnostics.alerts import CALIBRATION_LEVEL, WIDTH_CHANGE
    from sbi_rounds.store.schema import Calibration, Coverage, Movement, ParameterMovement, Tarp

    config = make_config(rounds=2)
    with run_session(config) as run:
        for r in (1, 2):
            run_round(run, r, dask_client, pairplot=False)
            diagnose(run, r, dask_client)
        store = run.store
        levels = [round(0.05 * i, 2) for i in range(21)]

        def calibration(at90, p, tarp_p=0.5):
            parameter = {"ks_p_value": p, "c2st_ranks": 0.5, "c2st_dap": 0.5, "rank_histogram": []}
            return Calibration(
                test_simulations=400,
                valid=400,
                posterior_samples=100,
                parameters={"theta_1": parameter, "theta_2": {**parameter, "ks_p_value": 0.5}},
                rank_bins=[],
                coverage=Coverage(
                    levels=levels,
                    values=[at90 if lv == 0.9 else lv for lv in levels],
                    ks_p_value=0.5,
                ),
                tarp=Tarp(atc=-0.1, ks_p_value=tarp_p),
            )

        def alerts_with(cal):
            store.write_diagnostics(1, store.diagnostics(1), cal)
            return [a for a in round_alerts(run, 1) if "miscalibrated" in a]

        # four tests: one failing at the Bonferroni level is named, one just above is not
        assert alerts_with(calibration(0.9, CALIBRATION_LEVEL / 4 * 0.9))
        assert not alerts_with(calibration(0.9, CALIBRATION_LEVEL / 4 * 1.1))
        # 400 tests: coverage at 90% has a 99% band of +- 0.039
        (low,) = alerts_with(calibration(0.85, 0.5))
        assert "expected coverage 0.85 at 90%, outside 0.86-0.94" in low
        assert "too narrow (overconfident)" in low
        assert not alerts_with(calibration(0.87, 0.5))
        (tarp,) = alerts_with(calibration(0.9, 0.5, tarp_p=0.001))
        assert "TARP p=0.001" in tarp and "too narrow or biased" in tarp

        diagnostics = store.diagnostics(2)

        def width_alerts(ratio):
            moved = Movement(
                parameters={"theta_1": ParameterMovement(mean_shift=0.1, width_ratio=ratio)},
                max_mean_shift=0.1,
                max_width_change=abs(ratio - 1),
            )
            store.write_diagnostics(2, diagnostics.model_copy(update={"movement": moved}))
            return [a for a in round_alerts(run, 2) if "has not settled" in a]

        (wider,) = width_alerts(1 + WIDTH_CHANGE + 0.05)
        assert "theta_1 x1.30" in wider and "--rounds" in wider
        assert not width_alerts(1 + WIDTH_CHANGE - 0.05)
