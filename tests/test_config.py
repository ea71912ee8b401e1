"""RunConfig validation: errors name the field, unknown keys fail, files and xobs load."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from sbi_rounds.config import (
    PriorConfig,
    RunConfig,
    config_differences,
    format_validation_error,
    load_config_file,
)


def _errors(**kwargs):
    with pytest.raises(ValidationError) as info:
        RunConfig(**kwargs)
    return format_validation_error(info.value)


def test_defaults_are_the_embedded_example():
    config = RunConfig(xobs=[0.5, -0.3])
    assert config.method == "snpe" and config.rounds == 3
    assert config.simulator.path == "sbi_rounds.examples:linear_gaussian"
    assert config.prior.low == [-2.0, -2.0] and config.prior.high == [2.0, 2.0]
    assert config.simulations_for_round(3) == 1000
    assert config.network_model == "nsf"  # SNPE's default (DEFAULT_NETWORKS)


def test_wrong_values_name_the_field_and_the_allowed_range():
    text = _errors(xobs=[1.0], rounds=0)
    assert "rounds" in text and "greater than or equal to 1" in text
    text = _errors(xobs=[1.0], training={"learning_rate": -1})
    assert "training.learning_rate" in text
    text = _errors(xobs=[1.0], method="abc")
    assert "method" in text and "snpe" in text
    text = _errors(xobs=[1.0], x_dtype="int8")
    assert "x_dtype" in text and "'float32'" in text
    text = _errors(xobs=[1.0], diagnostics={"map_iterations": -1})
    assert "diagnostics.map_iterations" in text and "auto or an integer from 0" in text


def test_unknown_keys_are_errors():
    text = _errors(xobs=[1.0], round=3)
    assert "round: unknown setting" in text
    text = _errors(xobs=[1.0], network={"hiden_features": 3})
    assert "network.hiden_features: unknown setting" in text


def test_xobs_must_be_finite_numbers():
    assert "NaN or infinite" in _errors(xobs=[1.0, float("nan")])
    assert "xobs" in _errors(xobs=["a"])


def test_prior_width_must_be_positive():
    with pytest.raises(ValidationError, match="width must be positive.*parameter"):
        PriorConfig(low=[0.0, 1.0], high=[1.0, 1.0])
    with pytest.raises(ValidationError, match="either low/high box bounds or path"):
        PriorConfig(low=[0.0], high=[1.0], path="a:b")


def test_method_and_network_must_fit():
    assert "needs a classifier" in _errors(xobs=[1.0], method="snre", network={"model": "maf"})
    assert "needs a density" in _errors(xobs=[1.0], method="snle", network={"model": "mlp"})
    assert RunConfig(xobs=[1.0], method="snre").network_model == "resnet"


def test_a_sampler_the_method_cannot_use_is_refused_not_ignored():
    # SNPE with posterior.sampler=mcmc was sampled directly without a word; SNLE with
    # direct failed only after its first round had trained.
    text = _errors(xobs=[1.0], method="snpe", posterior={"sampler": "mcmc"})
    assert (
        "posterior.sampler='mcmc' does not apply to snpe" in text and "use auto or direct" in text
    )
    text = _errors(xobs=[1.0], method="snle", posterior={"sampler": "direct"})
    assert "does not apply to snle" in text and "mcmc or rejection or importance" in text
    assert RunConfig(xobs=[1.0], method="snre", posterior={"sampler": "rejection"})
    assert RunConfig(xobs=[1.0], method="tsnpe", posterior={"sampler": "direct"})


def test_simulations_per_round_list_repeats_its_last_entry():
    config = RunConfig(xobs=[1.0], simulations_per_round=[100, 200])
    assert [config.simulations_for_round(r) for r in (1, 2, 3)] == [100, 200, 200]
    assert "integers >= 2" in _errors(xobs=[1.0], simulations_per_round=[100, 1])


def test_xobs_loads_from_files(tmp_path):
    np.save(tmp_path / "x.npy", np.array([[0.5, -0.3]]))
    (tmp_path / "x.csv").write_text("0.5,-0.3\n")
    import h5py

    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["obs/x"] = np.array([0.5, -0.3])
    for spec in ("x.npy", "x.csv", "x.h5:obs/x"):
        assert RunConfig(xobs=str(tmp_path / spec)).xobs == [0.5, -0.3]
    assert "neither a list of numbers nor an existing file" in _errors(xobs="nope.npy")
    assert "has no dataset" in _errors(xobs=str(tmp_path / "x.h5:missing"))


def test_config_files_yaml_and_toml(tmp_path):
    (tmp_path / "c.yaml").write_text("xobs: [1, 2]\nrounds: 4\ntraining:\n  max_epochs: 5\n")
    (tmp_path / "c.toml").write_text("xobs = [1, 2]\nrounds = 4\n[training]\nmax_epochs = 5\n")
    for name in ("c.yaml", "c.toml"):
        config = RunConfig(**load_config_file(tmp_path / name))
        assert config.rounds == 4 and config.training.max_epochs == 5
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(ValueError, match="must end in .yaml, .yml or .toml"):
        load_config_file(tmp_path / "c.json")
    (tmp_path / "bad.yaml").write_text("xobs: [1\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config_file(tmp_path / "bad.yaml")


def test_fingerprint_ignores_safe_settings_and_run_id_derives_from_it():
    a = RunConfig(xobs=[1.0], rounds=3, cluster={"workers": 1})
    b = RunConfig(
        xobs=[1.0], rounds=5, cluster={"workers": 4}, training={"max_epochs": 3}, x_dtype="float64"
    )
    c = RunConfig(xobs=[1.5])
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert a.resolved_run_id == b.resolved_run_id == f"snpe-{a.fingerprint()[:10]}"
    assert RunConfig(xobs=[1.0], run_id="mine").resolved_run_id == "mine"


def test_config_differences_lists_dotted_paths():
    old = {"a": 1, "b": {"c": 2, "d": 3}}
    new = {"a": 1, "b": {"c": 5, "d": 3}, "e": 0}
    assert config_differences(old, new) == ["b.c: 2 -> 5", "e: '<unset>' -> 0"]


def test_config_is_frozen():
    config = RunConfig(xobs=[1.0])
    with pytest.raises(ValidationError):
        config.rounds = 5


def test_posterior_samples_auto_draws_what_mcmc_rounds_use():
    base = {"xobs": [0.5, -0.3], "rounds": 3, "simulations_per_round": [100, 300, 2000]}
    snle = RunConfig(**base, method="snle")
    # the next round's simulations, at least 200 (and the predictive check's 100)
    assert [snle.posterior_samples_for_round(r) for r in (1, 2, 3)] == [300, 2000, 2000]
    small = RunConfig(**{**base, "simulations_per_round": 100}, method="snre")
    assert small.posterior_samples_for_round(1) == 200
    checked = RunConfig(
        **{**base, "simulations_per_round": 100},
        method="snle",
        diagnostics={"predictive_simulations": 500},
    )
    assert checked.posterior_samples_for_round(2) == 500
    assert RunConfig(**base, method="snpe").posterior_samples_for_round(1) == 1000  # direct
    fixed = RunConfig(**base, method="snle", posterior={"num_samples": 250})
    assert fixed.posterior_samples_for_round(1) == 250
    with pytest.raises(ValidationError, match="num_samples"):
        RunConfig(**base, posterior={"num_samples": 5})
