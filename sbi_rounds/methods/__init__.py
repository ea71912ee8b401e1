"""Sequential inference methods: SNPE, TSNPE, SNLE and SNRE, and the one registry of them."""

from sbi_rounds.methods.base import (
    CLASSIFIER_MODELS,
    DENSITY_MODELS,
    ROLE_MODELS,
    DirectMethod,
    Method,
    Proposal,
    Role,
    TrainingData,
    training_tensors,
)
from sbi_rounds.methods.mcmc import PosteriorConfig, PotentialMethod, potential_posterior
from sbi_rounds.methods.snle import SNLE, nle_loss
from sbi_rounds.methods.snpe import SNPE, NPELossConfig, atomic_loss, npe_loss, sample_atoms
from sbi_rounds.methods.snre import SNRE, NRELossConfig, nre_b_loss, nre_c_loss
from sbi_rounds.methods.tsnpe import TSNPE, TruncationConfig, density_threshold, truncated_prior

__all__ = [
    "CLASSIFIER_MODELS",
    "DENSITY_MODELS",
    "METHODS",
    "ROLE_MODELS",
    "SNLE",
    "SNPE",
    "SNRE",
    "TSNPE",
    "DirectMethod",
    "Method",
    "NPELossConfig",
    "NRELossConfig",
    "PosteriorConfig",
    "PotentialMethod",
    "Proposal",
    "Role",
    "TrainingData",
    "TruncationConfig",
    "atomic_loss",
    "density_threshold",
    "get_method",
    "nle_loss",
    "npe_loss",
    "nre_b_loss",
    "nre_c_loss",
    "potential_posterior",
    "sample_atoms",
    "training_tensors",
    "truncated_prior",
]

#: The registry: every method by name, in the order the settings list them.
METHODS: dict[str, Method] = {m.name: m for m in (SNPE(), TSNPE(), SNLE(), SNRE())}


def get_method(name: str) -> Method:
    """The method called ``name`` (snpe, tsnpe, snle, snre)."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}") from None
