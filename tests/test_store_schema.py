"""A round's typed records (``sbi_rounds.store.schema``): written and read through a real run
store, unknown fields refused when written, and every record an older version wrote read."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import example_records
import h5py
import numpy as np
import pytest
from pydantic import ValidationError

from sbi_rounds.store import (
    POSTERIOR_SAMPLES,
    SIMULATIONS,
    TIMED_STAGES,
    Calibration,
    PosteriorSummary,
    RoundCounts,
    RoundDiagnostics,
    RunStore,
    Timings,
    TrainedNetwork,
    TrainingAttempt,
    TrainingSummaryRecord,
)
from sbi_rounds.store.checksums import stored_checksum
from sbi_rounds.store.schema import (
    DIAGNOSTICS,
    TRAINING_ATTEMPTS,
    TRAINING_SUMMARY,
    C2st,
    Movement,
)

FORMAT1_RUN = Path(__file__).parent / "data" / "format1-run"
#: The round attributes that hold records.
RECORDS = (
    "seconds_per_simulation",
    "posterior_summary",
    "pairplot",
    DIAGNOSTICS,
    TRAINING_ATTEMPTS,
    TRAINING_SUMMARY,
)


@pytest.fixture
def store(tmp_path):
    store = RunStore.create(tmp_path / "r" / "run.h5", config={"a": 1}, fingerprint="abc")
    for round_ in (1, 2):
        store.plan_round(
            round_,
            num_simulations=8,
            theta_dim=2,
            x_dim=3,
            chunk_size=4,
            num_posterior_samples=5,
            proposal={"kind": "prior"},
        )
    return store


def _attrs(path: Path, round_: int = 1) -> dict[str, str]:
    with h5py.File(path, "r") as f:
        return {k: v for k, v in f[f"rounds/{round_:04d}"].attrs.items() if isinstance(v, str)}


def _set_attr(path: Path, round_: int, name: str, value: object) -> None:
    with h5py.File(path, "r+") as f:
        f[f"rounds/{round_:04d}"].attrs[name] = json.dumps(value, sort_keys=True)


# --- every record, written and read back -----------------------------------------------------
def test_nothing_is_read_before_it_is_written(store):
    assert store.seconds_per_simulation(1) is None
    assert store.posterior_summary(1) is None
    assert store.diagnostics(1) is None and store.calibration(1) is None
    assert store.training_summary(1) is None and store.training_attempts(1) == []
    timings = store.timings(1)
    assert isinstance(timings, Timings) and all(math.isnan(v) for v in timings.by_stage().values())


@pytest.mark.parametrize("truth", [False, True])
def test_the_checks_and_calibration_round_trip_through_the_run_file(store, truth):
    diagnostics, calibration = (
        example_records.diagnostics(truth=truth),
        example_records.calibration(),
    )
    store.write_diagnostics(1, diagnostics, calibration)
    store.write_diagnostics(2, RoundDiagnostics(map=[0.1, 0.2]))  # only the MAP computed
    again = RunStore.open(store.path)
    assert again.diagnostics(1) == diagnostics and again.calibration(1) == calibration
    assert again.diagnostics(2) == RoundDiagnostics(map=[0.1, 0.2]) and again.calibration(2) is None
    assert again.diagnostics(2).seconds.total is None
    assert again.diagnostics(1).seconds.total == pytest.approx(1.75)
    # parts not computed are absent from the JSON, not null, as older versions wrote them
    stored = json.loads(_attrs(store.path, 2)[DIAGNOSTICS])
    assert stored == {"map": [0.1, 0.2], "seconds": {}}
    posterior = json.loads(_attrs(store.path, 1)[DIAGNOSTICS])["posterior"]["a"]
    assert ("truth" in posterior) == truth and ("truth_quantile" in posterior) == truth


def test_a_rewritten_check_replaces_the_stored_one(store):
    store.write_diagnostics(1, example_records.diagnostics(), example_records.calibration())
    fewer = RoundDiagnostics(map=[1.0, 2.0])
    store.write_diagnostics(1, fewer)  # without calibration: the stored one stays
    assert store.diagnostics(1) == fewer and store.calibration(1) == example_records.calibration()


def test_training_records_round_trip_and_attempts_are_appended(store):
    first = example_records.attempt(stalled=True, kept=True, excess=0.7)
    second = example_records.attempt(attempt=1, seed=7, network=None, fallback=True)
    summary = example_records.training_summary(
        attempt=1, limit_reached=None, best_val_loss=-math.inf
    )
    network = TrainedNetwork(
        weights={},
        architecture=example_records.architecture(),
        history={"val_loss": [2.0, 1.0]},
        summary=summary,
    )
    store.finish_training_attempt(1, first, network)
    store.finish_training_attempt(1, second)  # not kept: the network stays
    again = RunStore.open(store.path)
    assert again.training_attempts(1) == [first, second]
    assert again.training_attempts(1)[0].seed == first.seed  # 63 bits, exactly
    assert (
        again.training_summary(1) == summary
        and again.training_summary(1).best_val_loss == -math.inf
    )
    stored = json.loads(_attrs(store.path)[TRAINING_ATTEMPTS])
    assert "network" not in stored[1] and stored[1]["fallback"] is True


def test_the_posterior_summary_and_seconds_per_simulation_round_trip_with_their_seals(store):
    store.write_theta(1, 0, np.ones((8, 2)))
    store.write_chunks(1, [(0, np.zeros((4, 3)), 0.1), (1, np.ones((4, 3)), 0.2)])
    store.write_seconds_per_simulation(1, 0.0375, seal_datasets=SIMULATIONS)
    summary = example_records.posterior_summary()
    store.write_posterior_summary(1, summary, seal_datasets=POSTERIOR_SAMPLES)
    store.write_posterior_summary(2, example_records.posterior_summary(pairplot=None))
    again = RunStore.open(store.path)
    assert again.seconds_per_simulation(1) == 0.0375 and again.seconds_per_simulation(2) is None
    assert again.posterior_summary(1) == summary
    assert again.posterior_summary(2).pairplot is None
    attrs = _attrs(store.path)
    assert json.loads(attrs["pairplot"]) == "round_001_pairplot.png"
    assert set(json.loads(attrs["posterior_summary"])) == {"a", "b"}  # the mapping, as before
    with h5py.File(store.path, "r") as f:  # sealed in the same commits
        group = f["rounds/0001"]
        sealed = {name for name in group if stored_checksum(group, name) is not None}
        unsealed = f["rounds/0002"]  # its posterior summary was written without a seal
        assert not {name for name in unsealed if stored_checksum(unsealed, name) is not None}
    assert {*SIMULATIONS, *POSTERIOR_SAMPLES} <= sealed
    assert again.verify() == []


def test_counts_are_unknown_until_the_simulations_are_appended(store):
    assert store.counts(1) == RoundCounts(simulations=-1, valid=-1, invalid=-1)
    assert not store.counts(1).known
    store.set_counts(1, 10, 7)
    assert store.counts(1) == RoundCounts(simulations=10, valid=7, invalid=3)
    assert store.counts(1).known


def test_timings_name_every_timed_stage_in_order(store):
    store.record_timing(1, "train", 2.5)
    store.record_timing(1, "train", 0.5)
    timings = store.timings(1)
    assert list(timings.by_stage()) == list(TIMED_STAGES) == list(Timings.model_fields)
    assert timings.train == 3.0 and math.isnan(timings.simulate)


# --- what a writer refuses -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "values", "field"),
    [
        (TrainingAttempt, {**example_records.attempt().model_dump(), "kep": True}, "kep"),
        (
            TrainingSummaryRecord,
            {**example_records.training_summary().model_dump(), "epoch": 3},
            "epoch",
        ),
        (PosteriorSummary, {"parameters": {}, "pairplots": "a.png"}, "pairplots"),
        (RoundDiagnostics, {"c2st": {"accuracy": 0.5, "samples": 10, "seed": 1}}, "c2st.seed"),
        (RoundDiagnostics, {"seconds": {"calibrate": 1.0}}, "seconds.calibrate"),
        (Movement, {"parameters": {}, "max_mean_shift": 0, "max_width_change": 0, "x": 1}, "x"),
        (
            Calibration,
            {
                **example_records.calibration().model_dump(),
                "coverage": {"levels": [], "values": [], "ks_p_value": 1.0, "auc": 1},
            },
            "coverage.auc",
        ),
    ],
)
def test_an_unknown_field_is_refused_with_its_name(model, values, field):
    with pytest.raises(ValidationError, match=rf"(?m)^{field}\n\s+Extra inputs are not permitted"):
        model.model_validate(values)


def test_a_record_of_the_wrong_shape_is_refused_and_nothing_is_committed(store):
    before = store.path.read_bytes()
    with pytest.raises(ValidationError, match=r"map\.0\n\s+Input should be a valid number"):
        store.write_diagnostics(1, {"map": ["big"]})
    with pytest.raises(ValidationError, match="bogus"):
        store.write_diagnostics(1, example_records.diagnostics(), {"bogus": 1})
    with pytest.raises(ValidationError, match="accuracy"):
        C2st(samples=10)
    assert store.path.read_bytes() == before and store.diagnostics(1) is None
    with pytest.raises(ValidationError, match="frozen"):
        example_records.attempt().kept = False  # records are frozen


# --- what older versions wrote ---------------------------------------------------------------
@pytest.fixture
def old_run(tmp_path):
    target = tmp_path / "format1-run"
    shutil.copytree(FORMAT1_RUN, target)
    return target / "run.h5"


def test_the_records_of_a_format1_run_are_read_into_the_models_and_written_back_unchanged(
    old_run, store
):
    new, store = store, RunStore.open(old_run)
    for r in (1, 2):
        diag = store.diagnostics(r)
        assert set(diag.posterior) == {"theta_1", "theta_2"} and len(diag.map) == 2
        assert diag.predictive.valid == diag.predictive.simulations == 20
        assert diag.predictive.figure == f"round_00{r}_predictive.png"
        assert diag.c2st is None and diag.seconds.map > 0 and diag.seconds.c2st is None
        assert (diag.movement is None) == (r == 1)
        assert store.calibration(r) is None  # the run was made without calibration
        summary = store.posterior_summary(r)
        assert set(summary.parameters) == {"theta_1", "theta_2"} and summary.pairplot is None
        assert store.seconds_per_simulation(r) > 0
        (attempt,) = store.training_attempts(r)
        assert attempt.kept and attempt.network == "maf" and not attempt.fallback
        training = store.training_summary(r)
        assert training.epochs == attempt.epochs == 5 and training.limit_reached == "max_epochs"
        assert training.stall_check.reference == attempt.reference
        # written again, each record is the same JSON: older versions read what this one writes
        new.write_seconds_per_simulation(r, store.seconds_per_simulation(r))
        new.write_posterior_summary(r, summary)
        new.write_diagnostics(r, diag)
        network = TrainedNetwork(
            weights={},
            architecture=example_records.architecture(),
            history={},
            summary=training,
        )
        new.finish_training_attempt(r, attempt, network)
        old, written = _attrs(old_run, r), _attrs(new.path, r)
        for name in RECORDS:
            assert written[name] == old[name], name
    movement = store.diagnostics(2).movement
    assert movement.max_mean_shift == pytest.approx(0.29382948442948376)
    assert movement.parameters["theta_2"].width_ratio == pytest.approx(0.8555581262185566)


def test_records_written_before_fields_were_added_read_with_their_defaults(store):
    # as the first versions wrote them: no fallback networks, batch size or stall check yet
    old_attempt = example_records.attempt().model_dump(exclude={"network", "fallback", "kept"})
    old_summary = example_records.training_summary().model_dump(
        exclude={"limit_reached", "batch_size", "attempt", "stall_check"}
    )
    _set_attr(store.path, 1, TRAINING_ATTEMPTS, [old_attempt])
    _set_attr(store.path, 1, TRAINING_SUMMARY, old_summary)
    calibration = example_records.calibration().model_dump(
        exclude={"warnings", "figures", "estimator", "note"}
    )
    _set_attr(store.path, 1, "calibration", calibration)
    (attempt,) = store.training_attempts(1)
    assert attempt.network is None and not attempt.fallback and not attempt.kept
    summary = store.training_summary(1)
    assert summary.limit_reached is None and summary.batch_size is None
    assert summary.attempt == 0 and summary.stall_check is None
    cal = store.calibration(1)
    assert cal.warnings == [] and cal.figures == {} and cal.estimator is None


def test_keys_a_model_lacks_are_dropped_when_read_but_refused_when_written(store):
    diagnostics = example_records.diagnostics().model_dump()
    retired = {
        **diagnostics,
        "checks_version": 3,
        "c2st": {**diagnostics["c2st"], "folds": 5},
    }
    _set_attr(store.path, 1, DIAGNOSTICS, retired)
    read = store.diagnostics(1)
    assert read == example_records.diagnostics()
    with pytest.raises(ValidationError, match="checks_version"):
        store.write_diagnostics(1, retired)
