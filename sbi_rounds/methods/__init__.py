"""Sequential inference methods: SNPE, TSNPE, SNLE and SNRE."""

from sbi_rounds.methods.base import Method, Proposal, TrainingData, training_tensors
from sbi_rounds.methods.snle import SNLE, nle_loss
from sbi_rounds.methods.snpe import SNPE, atomic_loss, npe_loss, sample_atoms
from sbi_rounds.methods.snre import SNRE, nre_b_loss, nre_c_loss
from sbi_rounds.methods.tsnpe import TSNPE, density_threshold, truncated_prior

__all__ = [
    "METHODS",
    "SNLE",
    "SNPE",
    "SNRE",
    "TSNPE",
    "Method",
    "Proposal",
    "TrainingData",
    "atomic_loss",
    "density_threshold",
    "get_method",
    "nle_loss",
    "npe_loss",
    "nre_b_loss",
    "nre_c_loss",
    "sample_atoms",
    "training_tensors",
    "truncated_prior",
]

METHODS: dict[str, Method] = {"snpe": SNPE(), "tsnpe": TSNPE(), "snle": SNLE(), "snre": SNRE()}


def get_method(name: str) -> Method:
    """The method called ``name`` (snpe, tsnpe, snle, snre)."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}") from None
