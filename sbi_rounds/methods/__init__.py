"""Sequential inference methods: SNPE, TSNPE, TFMPE, TNPSE, SNLE and SNRE, and their registry.

Each method is a class that owns what differs by method (network role, loss, proposal,
sampler, typed settings). It may import ``store`` (its records), ``training``, ``runtime``,
``strict`` and ``errors``; never ``config``, which builds on it.
"""

from sbi_rounds.methods.base import (
    CLASSIFIER_MODELS,
    DENSITY_MODELS,
    ROLE_MODELS,
    VECTOR_FIELD_MODELS,
    DirectMethod,
    Method,
    Proposal,
    Role,
    TrainingData,
    training_tensors,
)
from sbi_rounds.methods.fitted_density import fitted_density, fitted_threshold
from sbi_rounds.methods.mcmc import PosteriorConfig, PotentialMethod, potential_posterior
from sbi_rounds.methods.snle import SNLE, nle_loss
from sbi_rounds.methods.snpe import SNPE, NPELossConfig, atomic_loss, npe_loss, sample_atoms
from sbi_rounds.methods.snre import SNRE, NRELossConfig, nre_b_loss, nre_c_loss
from sbi_rounds.methods.tfmpe import TFMPE, FlowMatchingConfig, logit_normal_times, power_times
from sbi_rounds.methods.tnpse import TNPSE, ScoreMatchingConfig
from sbi_rounds.methods.tsnpe import TSNPE, TruncationConfig, density_threshold, truncated_prior
from sbi_rounds.methods.vector_field import (
    VectorFieldMethod,
    VectorFieldSettings,
    vector_field_loss,
    vector_field_posterior,
)

__all__ = [
    "CLASSIFIER_MODELS",
    "DENSITY_MODELS",
    "METHODS",
    "ROLE_MODELS",
    "SNLE",
    "SNPE",
    "SNRE",
    "TFMPE",
    "TNPSE",
    "TSNPE",
    "VECTOR_FIELD_MODELS",
    "DirectMethod",
    "FlowMatchingConfig",
    "Method",
    "NPELossConfig",
    "NRELossConfig",
    "PosteriorConfig",
    "PotentialMethod",
    "Proposal",
    "Role",
    "ScoreMatchingConfig",
    "TrainingData",
    "TruncationConfig",
    "VectorFieldMethod",
    "VectorFieldSettings",
    "atomic_loss",
    "density_threshold",
    "fitted_density",
    "fitted_threshold",
    "get_method",
    "logit_normal_times",
    "power_times",
    "nle_loss",
    "npe_loss",
    "nre_b_loss",
    "nre_c_loss",
    "potential_posterior",
    "sample_atoms",
    "training_tensors",
    "truncated_prior",
    "vector_field_loss",
    "vector_field_posterior",
]

#: The registry: every method by name, in the order the settings list them.
METHODS: dict[str, Method] = {
    m.name: m for m in (SNPE(), TSNPE(), SNLE(), SNRE(), TFMPE(), TNPSE())
}


def get_method(name: str) -> Method:
    """The method called ``name`` (snpe, tsnpe, tfmpe, tnpse, snle, snre)."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}") from None
