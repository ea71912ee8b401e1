"""TFMPE and TNPSE: their settings, networks, loss, stall reference and truncated regions."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from sbi_rounds.builders.networks import (
    build_network,
    load_network,
    network_architecture,
)
from sbi_rounds.config import IDENTITY_FIELDS, RunConfig, format_validation_error
from sbi_rounds.errors import ConfigMismatchError
from sbi_rounds.lifecycle.session import open_run
from sbi_rounds.methods import fitted_threshold, get_method, power_times, vector_field_loss
from sbi_rounds.methods.tfmpe import FlowMatchingConfig
from sbi_rounds.stages.stall import validation_losses, zero_field_losses
from sbi_rounds.store import RunStore

THETA = torch.randn(300, 2)
X = THETA + 0.1 * torch.randn(300, 2)


def _errors(**kwargs):
    with pytest.raises(ValidationError) as info:
        RunConfig(xobs=[0.5, -0.3], **kwargs)
    return format_validation_error(info.value)


# --- settings ---------------------------------------------------------------------------


def test_defaults_are_documented_and_typed():
    f = RunConfig(xobs=[0.0], method="tfmpe")
    s = RunConfig(xobs=[0.0], method="tnpse")
    assert f.network_model == s.network_model == "mlp"
    assert f.tfmpe.sample_with == "ode" and s.tnpse.sample_with == "sde"
    assert s.tnpse.sde_type == "ve" and f.tfmpe.time_sampling == "uniform"
    assert f.posterior_sampler == "direct"
    assert f.calibration_simulations == 0  # auto: a density rank is an ODE solve per sample
    # auto: 20 MAP steps (each differentiates through an ODE solve), 200 for the flows
    assert f.map_iterations == s.map_iterations == 20
    assert RunConfig(xobs=[0.0], method="snpe").map_iterations == 200
    assert (
        RunConfig(xobs=[0.0], method="tnpse", diagnostics={"map_iterations": 5}).map_iterations == 5
    )
    for name, field in type(f.tfmpe).model_fields.items():
        assert field.description, f"tfmpe.{name} has no description"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"method": "tfmpe", "tfmpe": {"num_layer": 3}}, "tfmpe.num_layer: unknown setting"),
        (
            {"method": "tfmpe", "network": {"num_transforms": 3}},
            "network.num_transforms=3 does not apply to tfmpe",
        ),
        ({"method": "tnpse", "network": {"num_bins": 4}}, "network.num_bins=4 does not apply"),
        (
            {"method": "snpe", "tfmpe": {"num_layers": 3}},
            "tfmpe settings apply only to method='tfmpe'",
        ),
        (
            {"method": "tfmpe", "tfmpe": {"sde_steps": 100}},
            "sde_steps=100 applies only to sample_with=sde",
        ),
        (
            {"method": "tnpse", "tnpse": {"sde_type": "vp", "train_schedule": "lognormal"}},
            "train_schedule='lognormal' applies only to sde_type='ve'",
        ),
        (
            {"method": "tnpse", "tnpse": {"threshold_density": "kde", "ode_atol": 1e-3}},
            "ode_atol applies only where an ODE is solved",
        ),
        (
            {"method": "tnpse", "posterior": {"sampler": "mcmc"}},
            "posterior.sampler='mcmc' does not apply to tnpse",
        ),
        (
            {"method": "tfmpe", "network": {"model": "maf"}},
            "network.model='maf' is a density estimator; tfmpe needs a vector-field network",
        ),
        ({"method": "snre", "network": {"model": "ada_mlp"}}, "snre needs a classifier"),
        ({"method": "tfmpe", "tfmpe": {"time_sampling": "beta"}}, "tfmpe.time_sampling"),
        ({"method": "tnpse", "tnpse": {"quantile": 1.5}}, "tnpse.quantile"),
    ],
)
def test_unknown_or_inapplicable_settings_are_errors_naming_the_field(settings, message):
    assert message in _errors(**settings)


def test_settings_left_at_their_defaults_are_accepted_whatever_the_method():
    """A form that sends every default (Prefect's) is not an error."""
    defaults = RunConfig(xobs=[0.0]).model_dump()
    RunConfig(**{**defaults, "method": "tnpse"})
    RunConfig(**{**defaults, "method": "tfmpe", "tfmpe": {"sde_steps": 500}})


def test_other_methods_keep_their_identity_and_fingerprints():
    """The new settings are identity settings of their own method only, so the run ids of
    existing runs (derived from the fingerprint) do not change."""
    assert tuple(RunConfig(xobs=[0.0], method="snpe").identity()) == IDENTITY_FIELDS
    assert RunConfig(xobs=[0.5, -0.3]).fingerprint() == (
        "b19d22ab4cf1b6226e8a32bf2beacadb42093493d868b996c03bd71fa9d624f8"
    )
    tfmpe = RunConfig(xobs=[0.0], method="tfmpe")
    assert tuple(tfmpe.identity()) == (*IDENTITY_FIELDS, "tfmpe")
    other = RunConfig(xobs=[0.0], method="tfmpe", tfmpe={"num_layers": 3})
    assert other.fingerprint() != tfmpe.fingerprint()


def test_a_tfmpe_run_recorded_before_time_power_keeps_its_run_id_and_resumes(tmp_path):
    """``tfmpe.time_power`` came after TFMPE runs existed: at its former value (3, unused
    with uniform times) it is no part of the identity, so the defaults keep the run id they
    had, and a run file recorded without it resumes; another power is another run."""
    config = RunConfig(xobs=[0.5, -0.3], method="tfmpe", run_dir=str(tmp_path))
    assert config.resolved_run_id == "tfmpe-42f0f78083"  # before time_power existed
    run = open_run(config)
    recorded = run.store.read_config()
    del recorded["tfmpe"]["time_power"]
    run.store.update_config(recorded, ["as a run file from before time_power"])
    assert "time_power" not in RunStore.open(config.run_path).read_config()["tfmpe"]
    open_run(config)  # resumes: no ConfigMismatchError
    power = config.model_copy(
        update={"tfmpe": FlowMatchingConfig(time_sampling="power", time_power=4)}
    )
    assert power.resolved_run_id != config.resolved_run_id
    with pytest.raises(ConfigMismatchError, match="tfmpe.time_power: '<unset>' -> 4.0"):
        open_run(power.model_copy(update={"run_id": config.resolved_run_id}))


# --- networks ---------------------------------------------------------------------------


def _settings(method, **kw):
    network = {"hidden_features": 16, **kw.pop("network", {})}
    return network_architecture(RunConfig(xobs=[0.0, 0.0], method=method, network=network, **kw))


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("tfmpe", {}),
        ("tfmpe", {"network": {"model": "ada_mlp"}, "tfmpe": {"gaussian_baseline": True}}),
        ("tnpse", {}),
        ("tnpse", {"tnpse": {"sde_type": "vp"}}),
        ("tnpse", {"tnpse": {"sde_type": "subvp", "time_embedding": "random_fourier"}}),
        ("tnpse", {"tnpse": {"train_schedule": "lognormal", "num_layers": 2}}),
    ],
)
def test_vector_field_networks_rebuild_exactly_from_their_settings(method, extra):
    settings = _settings(method, **extra)
    net = build_network(get_method(method), settings, THETA, X)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    rebuilt = load_network(
        get_method(method), settings, net.state_dict(), 3 * torch.randn(50, 2), torch.randn(50, 2)
    )
    net.eval()
    t = torch.linspace(0.1, 0.9, 7)
    assert torch.equal(net(THETA[:7], X[:7], t), rebuilt(THETA[:7], X[:7], t))
    assert settings.role == "vector_field"
    assert settings.estimator == ("flow" if method == "tfmpe" else "score")


# --- loss -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["tfmpe", "tnpse"])
def test_the_validation_loss_is_the_mean_over_fixed_times(method):
    """Eval mode: every row at the same evenly spaced times (sbi's ``train()``), the loss
    per row ``(B,)``; training mode: random times, one loss per row."""
    config = RunConfig(xobs=[0.0, 0.0], method=method)
    settings = config.method_settings
    net = build_network(get_method(method), network_architecture(config), THETA, X)
    loss = get_method(method).loss_fn(settings, None, 1)
    batch = (THETA[:20], X[:20])
    net.eval()
    torch.manual_seed(1)
    got = loss(net, batch)
    torch.manual_seed(1)
    times = net.solve_schedule(10, t_min=net.t_min + 0.05, t_max=net.t_max - 0.05)
    want = (
        net.loss(THETA[:20].repeat(10, 1), X[:20].repeat(10, 1), times=times.repeat_interleave(20))
        .reshape(10, 20)
        .mean(0)
    )
    assert got.shape == (20,) and torch.equal(got, want)
    net.train()
    assert loss(net, batch).shape == (20,)


@pytest.mark.parametrize(
    "tfmpe", [{"time_sampling": "logit_normal"}, {"time_sampling": "power", "time_power": 4}]
)
def test_chosen_training_times_reach_the_estimator(tfmpe):
    config = RunConfig(xobs=[0.0, 0.0], method="tfmpe", tfmpe=tfmpe)
    net = build_network(get_method("tfmpe"), network_architecture(config), THETA, X)
    seen = []
    original = net.loss

    def spy(theta, x, times=None, **kw):
        seen.append(times)
        return original(theta, x, times=times, **kw)

    net.loss = spy
    get_method("tfmpe").loss_fn(config.tfmpe, None, 1)(net.train(), (THETA[:64], X[:64]))
    assert seen[0] is not None and seen[0].shape == (64,)
    assert 0 <= float(seen[0].min()) and float(seen[0].max()) < 1


def test_power_times_lean_towards_the_data_end():
    """``u ** k``: a quarter of the times below 0.25 ** k, and their mean 1 / (k + 1)."""
    torch.manual_seed(0)
    times = power_times(3.0)(100_000, torch.device("cpu"))
    assert abs(float((times < 0.25**3).float().mean()) - 0.25) < 0.01
    assert abs(float(times.mean()) - 0.25) < 0.01


def test_time_power_without_power_sampling_is_refused():
    with pytest.raises(ValueError, match="time_power=2.0 applies only to time_sampling=power"):
        RunConfig(xobs=[0.0, 0.0], method="tfmpe", tfmpe={"time_power": 2.0})


@pytest.mark.parametrize("method", ["tfmpe", "tnpse"])
def test_the_zero_field_reference_is_what_an_untrained_estimator_loses_to(method):
    """Round 1's stall reference: the same estimator with a network that outputs zero. A
    few hundred steps of training beat it clearly; the reference leaves the model as it was."""
    config = RunConfig(xobs=[0.0, 0.0], method=method)
    net = build_network(get_method(method), network_architecture(config), THETA, X)
    loss = vector_field_loss(10, 0.05)
    val = (THETA[200:], X[200:])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    reference = zero_field_losses(net, loss, val, seed=3)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert reference.shape == (100,) and bool(torch.isfinite(reference).all())
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for _ in range(300):
        i = torch.randint(0, 200, (100,))
        optimizer.zero_grad()
        loss(net, (THETA[i], X[i])).mean().backward()
        optimizer.step()
    trained = validation_losses(net, loss, val, seed=3)
    assert float(trained.mean()) < float(reference.mean())


# --- truncation -------------------------------------------------------------------------


def test_the_fitted_threshold_bounds_the_highest_density_region():
    """A KDE of N(0, I) samples in 2-D: the region above its threshold holds about
    ``1 - quantile`` of fresh samples, and its threshold is near the true density's
    (``-log 2 pi + log q``; the smoothing widens the tails a little)."""
    samples = torch.randn(8000, 2) * torch.tensor([0.1, 3.0]) + 1.0
    quantile = 0.05
    density, threshold = fitted_threshold(samples, quantile)
    fresh = torch.randn(4000, 2) * torch.tensor([0.1, 3.0]) + 1.0
    inside = (density.log_prob(fresh) > threshold).float().mean()
    assert abs(float(inside) - (1 - quantile)) < 0.02
    true = -math.log(2 * math.pi * 0.1 * 3.0) + math.log(quantile)
    assert abs(threshold - true) < 0.3
