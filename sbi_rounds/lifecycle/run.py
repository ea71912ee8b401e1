"""A resolved run: settings, store, prior, method and observation, and what derives from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from sbi_rounds.builders.networks import load_network
from sbi_rounds.builders.priors import StoredPrior, build_prior
from sbi_rounds.config import RunConfig
from sbi_rounds.methods import Method, get_method
from sbi_rounds.store import RunFileError, RunStore
from sbi_rounds.store.layout import RunLayout

__all__ = [
    "Run",
    "network_for_round",
    "parameter_names",
    "posterior_for_round",
    "resolve_run",
]


@dataclass(frozen=True)
class Run:
    """The resolved inputs of a run: settings, store, prior, method and observation."""

    config: RunConfig
    store: RunStore
    prior: Distribution
    method: Method
    xobs: torch.Tensor  # (K,)
    theta_dim: int

    @property
    def directory(self) -> Path:
        """The run's directory (holds run.h5, the lock, and the folders of ``layout``)."""
        return self.store.path.parent

    @property
    def layout(self) -> RunLayout:
        """Where the run's files go: its round files, checks, report and figures."""
        return RunLayout.of(self.directory)


def resolve_run(config: RunConfig, store: RunStore, prior: Distribution | None = None) -> Run:
    """Build the run's prior (unless given) and method and check the parameter names
    against the prior.

    Raises:
        ValueError: A prior that cannot be built, or names that do not fit it.
    """
    prior = build_prior(config.prior) if prior is None else prior
    if isinstance(prior, StoredPrior):
        names = config.parameter_names or []
        theta_dim = int(prior.event_shape[-1]) if prior.event_shape else len(names)
    else:
        theta_dim = int(prior.sample((1,)).shape[-1])
    if config.parameter_names is not None and len(config.parameter_names) != theta_dim:
        raise ValueError(
            f"parameter_names has {len(config.parameter_names)} names but the prior has "
            f"{theta_dim} parameters"
        )
    return Run(
        config=config,
        store=store,
        prior=prior,
        method=get_method(config.method),
        xobs=torch.tensor(config.xobs, dtype=torch.float32),
        theta_dim=theta_dim,
    )


def _reference_data(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """Round 1's valid simulations: what every network is (re)built from (not checked
    against their checksums: the stored weights replace what was built from them)."""
    theta, x, valid = run.store.read_simulations(1, checked=False)
    if not valid.any():  # a repair left them out: the next run simulates them again
        raise RunFileError(
            f"round 1's simulations are not in {run.store.path} (a repair left them out to "
            "be simulated again); rerun the run's command to recompute them, then load it"
        )
    return torch.from_numpy(theta[valid]).float(), torch.from_numpy(x[valid]).float()


def network_for_round(run: Run, round_: int) -> nn.Module:
    """Rebuild the network trained in ``round_`` from the run file (no pickle)."""
    weights, architecture = run.store.read_network(round_)
    theta, x = _reference_data(run)
    return load_network(run.method, architecture, weights, theta, x)


def posterior_for_round(run: Run, round_: int) -> Any:
    """The sbi posterior of ``round_``'s network with ``xobs`` as its default x."""
    network = network_for_round(run, round_)
    return run.method.posterior(
        run.config.posterior, network, run.prior, run.xobs, run.config.method_settings
    )


def parameter_names(run: Run) -> list[str]:
    """The configured parameter names, or ``theta_1 .. theta_D``."""
    return run.config.parameter_names or [f"theta_{i + 1}" for i in range(run.theta_dim)]
