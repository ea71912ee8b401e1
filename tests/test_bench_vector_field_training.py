"""The vector-field retraining benchmark's settings: the kept run's config, changed only
where asked, validated again."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from bench_vector_field_training import retraining_config  # noqa: E402

from sbi_rounds.config import RunConfig  # noqa: E402


def _args(*sets: str, hidden=None, patience=None, time_power=None) -> argparse.Namespace:
    return argparse.Namespace(
        set=list(sets), hidden=hidden, patience=patience, time_power=time_power
    )


@pytest.fixture
def kept() -> RunConfig:
    return RunConfig(
        method="tfmpe",
        xobs=[0.5, -0.3],
        network={"hidden_features": 128},
        training={"patience": 100, "scheduler": {"kind": "plateau", "patience": 20}},
        tfmpe={"time_sampling": "power"},
    )


def test_without_changes_the_run_is_retrained_as_its_config_says(kept):
    config = retraining_config(_args(), kept)
    assert config == kept


def test_set_changes_only_what_it_names(kept):
    config = retraining_config(
        _args("tfmpe.gaussian_baseline=true", "training.learning_rate=1e-4"), kept
    )
    assert config.method_settings.gaussian_baseline is True
    assert config.training.learning_rate == pytest.approx(1e-4)
    assert config.training.scheduler.patience == 20  # the run's, kept
    assert config.network.hidden_features == 128
    assert config.method_settings.time_sampling == "power"


def test_the_width_patience_and_time_flags_override_the_run(kept):
    config = retraining_config(_args(hidden=64, patience=300, time_power=1), kept)
    assert config.network.hidden_features == 64
    assert config.training.patience == 300
    assert config.method_settings.time_sampling == "uniform"
    explicit = RunConfig(
        method="tfmpe", xobs=[0.5, -0.3], tfmpe={"time_sampling": "power", "time_power": 2.0}
    )
    assert retraining_config(_args(time_power=1), explicit).method_settings.time_sampling == (
        "uniform"
    )
    config = retraining_config(_args(time_power=2), kept)
    assert (config.method_settings.time_sampling, config.method_settings.time_power) == (
        "power",
        2.0,
    )


def test_a_wrong_setting_is_an_error_naming_it(kept):
    with pytest.raises(ValidationError, match=r"learning_rat\b"):
        retraining_config(_args("training.learning_rat=1e-4"), kept)
    with pytest.raises(ValidationError, match="learning_rate"):
        retraining_config(_args("training.learning_rate=-1"), kept)


def test_a_section_the_run_left_unset_is_filled_from_set():
    kept = RunConfig(method="tfmpe", xobs=[0.5, -0.3], training={"scheduler": None})
    config = retraining_config(
        _args("training.scheduler.kind=plateau", "training.scheduler.patience=20"), kept
    )
    assert (config.training.scheduler.kind, config.training.scheduler.patience) == ("plateau", 20)
