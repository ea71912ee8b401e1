"""Neural networks through sbi's builders, described by an architecture that rebuilds them."""

from __future__ import annotations

from torch import Tensor, nn

from sbi_rounds.builders.imports import import_object
from sbi_rounds.config import RunConfig
from sbi_rounds.methods import Method, get_method
from sbi_rounds.store.schema import NetworkArchitecture

__all__ = ["build_network", "load_network", "network_architecture"]


def network_architecture(config: RunConfig) -> NetworkArchitecture:
    """The architecture of ``config``'s network, as stored in the run file.

    ``role`` is the method's (:attr:`sbi_rounds.methods.Method.role`); a vector-field
    method adds its own architecture settings (``Method.network_extras``).
    """
    net = config.network
    method = get_method(config.method)
    return NetworkArchitecture(
        role=method.role,
        model=config.network_model,
        hidden_features=net.hidden_features,
        num_transforms=net.num_transforms,
        num_bins=net.num_bins,
        num_components=net.num_components,
        z_score_theta=net.z_score_theta,
        z_score_x=net.z_score_x,
        embedding_net=net.embedding_net,
        **method.network_extras(config.method_settings),
    )


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


def build_network(
    method: Method, architecture: NetworkArchitecture, theta: Tensor, x: Tensor
) -> nn.Module:
    """Build a fresh network of ``method``; ``theta (N, D)`` and ``x (N, K)`` set shapes
    and z-scoring.

    Returns:
        What ``method.network_builder`` builds: a ``ConditionalDensityEstimator``
        (posterior: density of theta given x; likelihood: density of x given theta), a
        ``RatioEstimator`` (classifier) or a ``ConditionalVectorFieldEstimator``
        (vector field: flow matching or score).

    Raises:
        ValueError: ``architecture`` is not a network ``method`` trains (another role).
    """
    if architecture.role != method.role:
        raise ValueError(
            f"a {architecture.role} network ({architecture.model}) is not {method.name}'s: "
            f"{method.name} trains a {method.role} network"
        )
    builder = method.network_builder(architecture, _embedding(architecture.embedding_net))
    return builder(theta.float(), x.float())


def load_network(
    method: Method,
    architecture: NetworkArchitecture,
    weights: dict[str, Tensor],
    theta: Tensor,
    x: Tensor,
) -> nn.Module:
    """Rebuild a stored network: build it from ``architecture`` and load its ``weights``.

    Every z-scoring statistic and random permutation is a buffer in ``weights``, so the
    rebuilt network computes exactly what the trained one did.
    """
    net = build_network(method, architecture, theta, x)
    missing, unexpected = net.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"stored weights do not fit the {architecture.model} network: missing {missing}, "
            f"unexpected {unexpected}"
        )
    net.eval()
    return net
