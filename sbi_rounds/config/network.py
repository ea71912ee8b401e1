"""The network's settings: which of sbi's builders, and its size and z-scoring."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from sbi_rounds.methods import CLASSIFIER_MODELS, DENSITY_MODELS, VECTOR_FIELD_MODELS
from sbi_rounds.strict import STRICT, ImportPath

__all__ = ["NETWORK_MODELS", "NetworkConfig"]

#: Every model name a network may have (``mlp`` is a classifier and a vector-field network).
NETWORK_MODELS = tuple(dict.fromkeys(DENSITY_MODELS + CLASSIFIER_MODELS + VECTOR_FIELD_MODELS))


class NetworkConfig(BaseModel):
    """The neural network, built through sbi's builders.

    ``model`` None picks the method's default (``Method.default_network``: ``nsf`` for
    SNPE/TSNPE, ``maf`` for SNLE, ``resnet`` for SNRE, ``mlp`` for TFMPE/TNPSE). Density
    models: maf, nsf, mdn, made and the zuko flows (``zuko_maf``, ...); classifiers (SNRE):
    mlp, resnet, linear; vector-field networks (TFMPE, TNPSE): mlp, ada_mlp, transformer,
    whose depth and time embedding are the method's settings (``tfmpe.num_layers``, ...);
    ``num_transforms``, ``num_bins`` and ``num_components`` do not apply to them.
    """

    model_config = STRICT

    model: Literal[NETWORK_MODELS] | None = Field(  # type: ignore[valid-type]
        None,
        title="Network",
        description="Density estimators maf, nsf, mdn, made, zuko_*; classifiers (snre) mlp, "
        "resnet, linear; vector-field networks (tfmpe, tnpse) mlp, ada_mlp, transformer; "
        "none: the method's default (nsf for snpe/tsnpe, maf for snle, resnet for snre, mlp "
        "for tfmpe/tnpse).",
    )
    hidden_features: int = Field(
        50, ge=1, le=4096, title="Hidden features", description="Network width."
    )
    num_transforms: int = Field(
        5, ge=1, le=64, title="Transforms", description="Flow transforms (layers)."
    )
    num_bins: int = Field(10, ge=1, le=256, title="Spline bins", description="Spline bins (nsf).")
    num_components: int = Field(
        10,
        ge=1,
        le=256,
        title="Mixture components (mdn)",
        description="Mixture components (mdn).",
    )
    z_score_theta: Literal["independent", "structured", "none"] = Field(
        "independent", title="z-score theta", description="How theta is standardized."
    )
    z_score_x: Literal["independent", "structured", "none"] = Field(
        "independent", title="z-score x", description="How x is standardized."
    )
    embedding_net: ImportPath | None = Field(
        None, title="Embedding network", description="module:function returning a torch module."
    )
