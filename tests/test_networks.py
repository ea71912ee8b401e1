"""Every network sbi builds for us is rebuilt exactly from stored settings and weights."""

from __future__ import annotations

import example_records
import pytest
import torch

from sbi_rounds.builders.networks import build_network, load_network, network_settings
from sbi_rounds.config import CLASSIFIER_MODELS, DENSITY_MODELS, RunConfig
from sbi_rounds.store import RunStore

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
    return network_settings(config)


@pytest.mark.parametrize(
    ("method", "model"),
    [("snpe", m) for m in DENSITY_MODELS]
    + [("snle", m) for m in ("maf", "nsf", "mdn", "made", "zuko_maf", "zuko_nsf")]
    + [("snre", m) for m in CLASSIFIER_MODELS],
)
def test_networks_rebuild_exactly_from_the_run_file(tmp_path, method, model):
    settings = _settings(method, model)
    net = build_network(settings, THETA, X)
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
        weights=net.state_dict(),
        architecture=settings,
        history={},
        summary=example_records.training_summary(),
    )
    weights, stored_settings = store.read_network(1)
    # Rebuilt from other data: z-scoring statistics and permutations come from the weights.
    rebuilt = load_network(stored_settings, weights, 3 * torch.randn(50, 2), torch.randn(50, 2))
    net.eval()
    assert torch.equal(_evaluate(net, settings["role"]), _evaluate(rebuilt, settings["role"]))


def test_an_embedding_network_is_imported_by_path():
    settings = _settings("snpe", "maf", embedding_net="simulators:small_embedding")
    net = build_network(settings, THETA, X)
    assert any(p.shape == (8, 2) for p in net.parameters())  # the embedding's first layer
    rebuilt = load_network(settings, net.state_dict(), THETA, X)
    net.eval()
    assert torch.equal(_evaluate(net, "posterior"), _evaluate(rebuilt, "posterior"))


def test_method_defaults_and_z_scoring_settings():
    assert _settings("snre", None)["model"] == "resnet"
    assert _settings("snle", None)["model"] == "maf"
    assert _settings("snpe", "nsf", z_score_x="none")["z_score_x"] == "none"
