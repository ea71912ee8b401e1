"""Neural networks through sbi's builders, described by settings that rebuild them exactly."""

from __future__ import annotations

from typing import Any

from sbi.neural_nets import (
    classifier_nn,
    likelihood_nn,
    posterior_flow_nn,
    posterior_nn,
    posterior_score_nn,
)
from torch import Tensor, nn

from sbi_rounds.builders.imports import import_object
from sbi_rounds.config import RunConfig
from sbi_rounds.methods import get_method

__all__ = ["build_network", "count_parameters", "load_network", "network_settings"]


def network_settings(config: RunConfig) -> dict[str, Any]:
    """The architecture settings of ``config``'s network, as stored in the run file.

    ``role`` is the method's (:attr:`sbi_rounds.methods.Method.role`); a vector-field
    method adds its own architecture settings (``Method.network_extras``).
    """
    net = config.network
    method = get_method(config.method)
    return {
        "role": method.role,
        "model": config.network_model,
        "hidden_features": net.hidden_features,
        "num_transforms": net.num_transforms,
        "num_bins": net.num_bins,
        "num_components": net.num_components,
        "z_score_theta": net.z_score_theta,
        "z_score_x": net.z_score_x,
        "embedding_net": net.embedding_net,
        **method.network_extras(config.method_settings),
    }


def _embedding(path: str | None) -> nn.Module:
    if path is None:
        return nn.Identity()
    factory = import_object(path, "embedding network")
    module = factory()
    if not isinstance(module, nn.Module):
        raise ValueError(
            f"embedding network {path} returned {type(module).__name__}, not a torch.nn.Module"
        )
    return module


def build_network(settings: dict[str, Any], theta: Tensor, x: Tensor) -> nn.Module:
    """Build a fresh network; ``theta (N, D)`` and ``x (N, K)`` set shapes and z-scoring.

    Returns:
        A ``ConditionalDensityEstimator`` (posterior: density of theta given x;
        likelihood: density of x given theta), a ``RatioEstimator`` (classifier) or a
        ``ConditionalVectorFieldEstimator`` (vector_field: flow matching or score).
    """
    role, model = settings["role"], settings["model"]
    z = {"z_score_theta": settings["z_score_theta"], "z_score_x": settings["z_score_x"]}
    if role == "vector_field":
        builder = _vector_field_builder(settings, z)
    elif role == "classifier":
        builder = classifier_nn(
            model=model,
            hidden_features=settings["hidden_features"],
            embedding_net_x=_embedding(settings["embedding_net"]),
            **z,
        )
    else:
        factory = posterior_nn if role == "posterior" else likelihood_nn
        builder = factory(
            model=model,
            hidden_features=settings["hidden_features"],
            num_transforms=settings["num_transforms"],
            num_bins=settings["num_bins"],
            num_components=settings["num_components"],
            embedding_net=_embedding(settings["embedding_net"]),
            **z,
        )
    return builder(theta.float(), x.float())


def _vector_field_builder(settings: dict[str, Any], z: dict[str, str]) -> Any:
    """sbi's ``posterior_flow_nn`` or ``posterior_score_nn`` for ``settings["estimator"]``."""
    common = {
        "model": settings["model"],
        "hidden_features": settings["hidden_features"],
        "num_layers": settings["num_layers"],
        "embedding_net": _embedding(settings["embedding_net"]),
        "time_emb_type": settings["time_embedding"],
        "t_embedding_dim": settings["time_embedding_dim"],
        **z,
    }
    if settings["estimator"] == "flow":
        return posterior_flow_nn(gaussian_baseline=settings["gaussian_baseline"], **common)
    extra = {"train_schedule": settings["train_schedule"]} if "train_schedule" in settings else {}
    return posterior_score_nn(sde_type=settings["sde_type"], **common, **extra)


def load_network(
    settings: dict[str, Any], weights: dict[str, Tensor], theta: Tensor, x: Tensor
) -> nn.Module:
    """Rebuild a stored network: build it from ``settings`` and load its ``weights``.

    Every z-scoring statistic and random permutation is a buffer in ``weights``, so the
    rebuilt network computes exactly what the trained one did.
    """
    net = build_network(settings, theta, x)
    missing, unexpected = net.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"stored weights do not fit the {settings['model']} network: missing {missing}, "
            f"unexpected {unexpected}"
        )
    net.eval()
    return net


def count_parameters(net: nn.Module) -> int:
    """Trainable parameters of ``net``."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
