"""Every network sbi builds for us is rebuilt exactly from stored settings and weights."""

from __future__ import annotations

from pathlib import Path

import example_records
import h5py
import pytest
import torch

from sbi_rounds.builders.networks import (
    build_network,
    load_network,
    network_architecture,
)
from sbi_rounds.config import CLASSIFIER_MODELS, DENSITY_MODELS, RunConfig
from sbi_rounds.methods import get_method
from sbi_rounds.store import RunStore, TrainedNetwork
from sbi_rounds.store.schema import NetworkArchitecture

THETA = torch.randn(300, 2)
X = THETA + 0.1 * torch.randn(300, 2)


def _evaluate(net, role):
    if role == "classifier":
        return net(THETA[:7], X[:7])
    if role == "posterior":
        return net.log_prob(THETA[None, :7], X[:7])
    return net.log_prob(X[None, :7], THETA[:7])


def _settings(method, model, **network):
    config = RunConfig(
        xobs=[0.0, 0.0],
        method=method,
        network={
            "model": model,
            "hidden_features": 16,
            "num_transforms": 2,
            "num_bins": 4,
            "num_components": 3,
            **network,
        },
    )
    return network_architecture(config)


@pytest.mark.parametrize(
    ("method", "model"),
    [("snpe", m) for m in DENSITY_MODELS]
    + [("snle", m) for m in ("maf", "nsf", "mdn", "made", "zuko_maf", "zuko_nsf")]
    + [("snre", m) for m in CLASSIFIER_MODELS],
)
def test_networks_rebuild_exactly_from_the_run_file(tmp_path, method, model):
    settings = _settings(method, model)
    net = build_network(get_method(method), settings, THETA, X)
    with torch.no_grad():  # perturb every weight so defaults could not pass by accident
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    store = RunStore.create(tmp_path / "run.h5", config={}, fingerprint="f")
    store.plan_round(
        1,
        num_simulations=4,
        theta_dim=2,
        x_dim=2,
        chunk_size=4,
        num_posterior_samples=10,
        proposal={"kind": "prior"},
    )
    store.write_network(
        1,
        TrainedNetwork(
            weights=net.state_dict(),
            architecture=settings,
            history={},
            summary=example_records.training_summary(),
        ),
    )
    weights, stored_settings = store.read_network(1)
    # Rebuilt from other data: z-scoring statistics and permutations come from the weights.
    rebuilt = load_network(
        get_method(method), stored_settings, weights, 3 * torch.randn(50, 2), torch.randn(50, 2)
    )
    net.eval()
    assert stored_settings == settings
    assert torch.equal(_evaluate(net, settings.role), _evaluate(rebuilt, settings.role))


def test_an_embedding_network_is_imported_by_path():
    settings = _settings("snpe", "maf", embedding_net="simulators:small_embedding")
    snpe = get_method("snpe")
    net = build_network(snpe, settings, THETA, X)
    assert any(p.shape == (8, 2) for p in net.parameters())  # the embedding's first layer
    rebuilt = load_network(snpe, settings, net.state_dict(), THETA, X)
    net.eval()
    assert torch.equal(_evaluate(net, "posterior"), _evaluate(rebuilt, "posterior"))


def test_method_defaults_and_z_scoring_settings():
    assert _settings("snre", None).model == "resnet"
    assert _settings("snle", None).model == "maf"
    assert _settings("snpe", "nsf", z_score_x="none").z_score_x == "none"


def test_the_architecture_is_stored_as_the_json_format_1_wrote():
    """Read from the format-1 run and written again, the JSON is byte for byte the same."""
    path = Path(__file__).parent / "data" / "format1-run" / "run.h5"
    with h5py.File(path, "r") as f:
        stored = f["rounds/0001/network"].attrs["architecture"]
    architecture = NetworkArchitecture.from_json(stored)
    assert architecture.role == "posterior" and architecture.model == "maf"
    assert architecture.to_json() == stored


def test_a_network_of_another_role_is_refused():
    with pytest.raises(ValueError, match="a posterior network .maf. is not snle's"):
        build_network(get_method("snle"), _settings("snpe", "maf"), THETA, X)
