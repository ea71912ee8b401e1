"""The stored description of a round's network: what rebuilds it exactly."""

from __future__ import annotations

import json
from typing import Literal

from sbi_rounds.store.schema.base import READING, Record, optional_field

__all__ = ["NetworkArchitecture", "Role", "ZScore"]

#: What a method's network estimates: the posterior, the likelihood, a ratio (classifier), or
#: the posterior's vector field (flow matching velocity or diffusion score).
Role = Literal["posterior", "likelihood", "classifier", "vector_field"]

#: How a network standardizes theta or x (sbi's ``z_score_*``).
ZScore = Literal["independent", "structured", "none"]


class NetworkArchitecture(Record):
    """The architecture of a trained network: sbi's builder arguments, built once from the
    settings (``sbi_rounds.builders.networks.network_architecture``) and stored as the JSON
    attribute ``architecture`` of the round's ``network`` group.

    The JSON is ``json.dumps(..., sort_keys=True)`` of the fields, as format 1 wrote it: the
    vector-field fields are present only for vector-field networks (``train_schedule`` only
    for a VE score network), ``embedding_net`` always (null: none).

    Attributes:
        role: What the network estimates (its method's ``Method.role``).
        model: sbi's model name (``maf``, ``nsf``, ``resnet``, ``mlp``, ...).
        embedding_net: ``module:function`` returning the embedding of x; None: identity.
    """

    role: Role
    model: str
    hidden_features: int
    num_transforms: int
    num_bins: int
    num_components: int
    z_score_theta: ZScore
    z_score_x: ZScore
    embedding_net: str | None = None
    estimator: Literal["flow", "score"] | None = optional_field(
        "Vector-field networks: flow matching or score matching."
    )
    num_layers: int | None = optional_field("Vector-field networks: hidden layers.")
    time_embedding: str | None = optional_field("Vector-field networks: how time is embedded.")
    time_embedding_dim: int | None = optional_field("Vector-field networks: embedding size.")
    gaussian_baseline: bool | None = optional_field("Flow matching: sbi's Gaussian baseline.")
    sde_type: str | None = optional_field("Score matching: the SDE (ve, vp, subvp).")
    train_schedule: str | None = optional_field("Score matching with a VE SDE: time schedule.")

    def to_json(self) -> str:
        """The JSON stored in the run file."""
        return json.dumps(self.model_dump(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> NetworkArchitecture:
        """Read what :meth:`to_json` (or any older version) stored; unknown keys are dropped."""
        return cls.model_validate(json.loads(text), context=READING)
